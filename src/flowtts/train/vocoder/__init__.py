"""Vocoder training (``flowtts vocoder train``): data, reconstruction losses, discriminators, the run."""
