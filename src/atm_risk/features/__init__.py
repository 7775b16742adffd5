"""The feature engine: one table of static and dynamic features per ATM, as of a time t.

``kernels`` holds the vectorised numerical core (KD-trees, STRtrees, binned Gaussian
smoothing), ``context`` the projected area layers with their coverage, ``engine`` puts them
together, and ``store`` reads the inputs from the database.
"""
