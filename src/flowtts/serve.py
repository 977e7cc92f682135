"""The speech server under its first import path (``flowtts.serve``).

Re-exports of :mod:`flowtts.serving.socket_server`.
"""

from flowtts.serving.socket_server import (
    END,
    ERROR,
    MAX_TEXT_BYTES,
    ServerError,
    SpeechServer,
    error_message,
    read_answer,
)

__all__ = ["END", "ERROR", "MAX_TEXT_BYTES", "ServerError", "SpeechServer", "error_message", "read_answer"]
