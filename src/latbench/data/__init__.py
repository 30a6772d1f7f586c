"""latbench.data"""
