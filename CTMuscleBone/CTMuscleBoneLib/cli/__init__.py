"""The ``ctmusclebone`` command line."""
