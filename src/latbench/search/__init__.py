"""latbench.search"""
