"""Launchable studies: configs, the training entry point and sweeps (see README)."""
