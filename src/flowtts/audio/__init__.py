"""Audio I/O, resampling, silence, cross-fade, vocoders (mel -> waveform) and offline transcription."""
