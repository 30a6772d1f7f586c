"""latbench.predictor"""
