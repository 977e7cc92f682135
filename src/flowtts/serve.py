"""A speech server on a TCP socket, spoken to as F5-TTS's ``socket_server.py`` is.

The protocol is upstream's, so its ``socket_client.py`` works unchanged: the client sends a text (UTF-8,
one ``send``), the server answers with the speech as raw 32-bit float samples (little-endian, mono, the
model's sample rate) as each sentence-level chunk is done (:func:`flowtts.infer.stream`), then the
three bytes ``END``; the client may send the next text on the same connection. One text is read per
``recv`` of up to :data:`MAX_TEXT_BYTES`, as upstream reads it. Clients are served one at a time, with
the model, vocoder and reference loaded once.

Unlike upstream, a text that cannot be spoken (not UTF-8, empty) is answered with ``END`` alone and
logged, and the connection stays usable; the server listens on ``127.0.0.1`` unless told otherwise.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import numpy as np

log = logging.getLogger("flowtts")

END = b"END"
MAX_TEXT_BYTES = 65_536


class SpeechServer:
    """Serve speech for texts sent over TCP.

    Args:
        model: A :class:`flowtts.CFM`.
        reference: The voice, from :func:`flowtts.infer.load_reference` / :func:`~flowtts.infer.prepare_reference`.
        vocoder: Log-mel ``(b, d, n)`` -> wave.
        options: :class:`flowtts.infer.InferenceOptions` (``remove_silence`` cannot stream).
        host: Address to listen on.
        port: Port (0: any free one; see :attr:`address`).
        seed: Seed of every request's first chunk (random per request when ``None``).
    """

    def __init__(self, model, reference, vocoder: Callable, options, *, host="127.0.0.1", port=9998, seed=None):
        if options.remove_silence:
            raise ValueError("remove_silence needs the whole output; a server streams, so it cannot be used")
        self.model, self.reference, self.vocoder, self.options, self.seed = model, reference, vocoder, options, seed
        self.socket = socket.create_server((host, port))
        self.requests = 0

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on."""
        return self.socket.getsockname()[:2]

    def speak(self, text: str):
        """The float32 little-endian byte chunks of ``text``'s speech."""
        from flowtts.infer import stream

        for wave in stream(
            self.model, self.reference, text, vocoder=self.vocoder, options=self.options, seed=self.seed
        ):
            yield np.ascontiguousarray(wave.detach().cpu().numpy(), dtype="<f4").tobytes()

    def handle(self, conn: socket.socket, max_requests: int | None = None) -> None:
        """Answer the texts of one connection until the client closes it (or ``max_requests`` are served)."""
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while max_requests is None or self.requests < max_requests:
            data = conn.recv(MAX_TEXT_BYTES)
            if not data:
                return
            self.requests += 1
            try:
                text = data.decode("utf-8").strip()
                for chunk in self.speak(text):
                    conn.sendall(chunk)
            except (UnicodeDecodeError, ValueError, TypeError) as exc:
                log.warning("request %d not spoken: %s", self.requests, exc)
            conn.sendall(END)

    def serve_forever(self, max_requests: int | None = None) -> None:
        """Accept clients one after another; return after ``max_requests`` texts (``None``: never)."""
        with self.socket:
            while max_requests is None or self.requests < max_requests:
                conn, peer = self.socket.accept()
                log.info("client %s:%d", *peer[:2])
                with conn:
                    try:
                        self.handle(conn, max_requests)
                    except (ConnectionError, OSError) as exc:  # a client that went away mid-answer
                        log.warning("client %s:%d: %s", *peer[:2], exc)


def read_answer(conn: socket.socket) -> np.ndarray:
    """Client side: the samples of one answer (everything up to ``END``), as float32."""
    data = b""
    while not (data.endswith(END) and (len(data) - len(END)) % 4 == 0):
        chunk = conn.recv(65_536)
        if not chunk:
            raise ConnectionError("server closed the connection before END")
        data += chunk
    return np.frombuffer(data[: -len(END)], dtype="<f4")
