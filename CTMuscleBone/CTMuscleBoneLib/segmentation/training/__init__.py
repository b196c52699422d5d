"""Training of the Bayesian U-Net: datasets (TotalSegmentator layout, images/labels
layout, synthetic phantoms), the MONAI training loop and the demo model recipe.

Imports torch and MONAI; nothing here is imported by the core package.
"""
