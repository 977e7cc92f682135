"""Serving speech to other programs: F5-TTS's socket-server protocol (:mod:`flowtts.serving.socket_server`)."""
