"""Segmentation with the Bayesian U-Net (torch + MONAI, imported only when used).

Importing this package imports no torch; the modules that need it (``network``,
``inference``, training) import it themselves.
"""
