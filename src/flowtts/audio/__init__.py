"""Audio I/O, resampling and vocoders (mel -> waveform)."""
