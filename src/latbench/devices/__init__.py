"""latbench.devices"""
