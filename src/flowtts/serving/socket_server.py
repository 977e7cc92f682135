"""A speech server on a TCP socket, spoken to as F5-TTS's ``socket_server.py`` is.

The protocol is upstream's, so its ``socket_client.py`` works unchanged: the client sends a text (UTF-8),
the server answers with the speech as raw 32-bit float samples (little-endian, mono, the model's sample
rate) as each sentence-level chunk is done (:func:`flowtts.synthesis.stream`), then the three bytes ``END``;
the client may send the next text on the same connection. The model, vocoder and reference are loaded
once.

Beyond upstream:

* A text is read until it is complete: until the client pauses for :data:`COMPLETION_WAIT` seconds
  outside a UTF-8 character, up to :data:`MAX_TEXT_BYTES` in all.
* A request that fails (not UTF-8, empty, too long, a text the model cannot read, any exception while
  speaking) is logged and answered with ``ERROR: <message>`` (padded with spaces to a multiple of 4 bytes
  and ended by a newline) and then ``END``, after whatever audio was already sent; the connection stays
  usable and the server keeps serving. :func:`read_answer` raises :class:`ServerError` with the message.
* Clients are served concurrently, up to ``max_clients`` at a time (their syntheses one after another),
  and a connected client that sends nothing for ``idle_timeout`` seconds is disconnected, so one idle
  client never blocks the others.
* It listens on ``127.0.0.1`` unless told otherwise.
"""

from __future__ import annotations

import codecs
import logging
import socket
import threading
from collections.abc import Callable

import numpy as np

log = logging.getLogger("flowtts")

END = b"END"
ERROR = b"ERROR: "
RECV_BYTES = 65_536  # one read, as upstream's server reads a text
MAX_TEXT_BYTES = 1 << 20  # a longer text is refused
COMPLETION_WAIT = 0.05  # seconds of silence that end a text


class ServerError(RuntimeError):
    """The server refused or failed a request; the message is the server's."""


def error_message(message: str) -> bytes:
    """The bytes of an error answer (before ``END``): ``ERROR: message``, space-padded, a newline."""
    body = ERROR + " ".join(str(message).split()).encode("utf-8")
    padding = -(len(body) + 1) % 4
    return body + b" " * padding + b"\n"


class SpeechServer:
    """Serve speech for texts sent over TCP.

    Args:
        model: A :class:`flowtts.CFM`.
        reference: The voice, from :func:`flowtts.synthesis.load_reference` or
            :func:`~flowtts.synthesis.prepare_reference`.
        vocoder: Log-mel ``(b, d, n)`` -> wave.
        options: :class:`flowtts.synthesis.InferenceOptions`, checked here (``remove_silence`` cannot stream).
        host: Address to listen on.
        port: Port (0: any free one; see :attr:`address`).
        seed: Seed of every request's first chunk (random per request when ``None``).
        max_clients: Connections served at once; later ones wait to be accepted.
        idle_timeout: Seconds a connected client may stay silent before it is disconnected.

    Raises:
        ValueError: Options out of range, or bad server settings.
        OSError: The address cannot be listened on.
    """

    def __init__(
        self,
        model,
        reference,
        vocoder: Callable,
        options,
        *,
        host="127.0.0.1",
        port=9998,
        seed=None,
        max_clients: int = 4,
        idle_timeout: float = 60.0,
    ):
        from flowtts.synthesis import check_options

        if options.remove_silence:
            raise ValueError("remove_silence needs the whole output; a server streams, so it cannot be used")
        check_options(options)
        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
            raise ValueError(f"max_clients must be an integer >= 1, got {max_clients!r}")
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive seconds, got {idle_timeout!r}")
        self.model, self.reference, self.vocoder, self.options, self.seed = model, reference, vocoder, options, seed
        self.max_clients, self.idle_timeout = max_clients, float(idle_timeout)
        self.socket = socket.create_server((host, port))
        self.requests = 0
        self.errors = 0
        self._lock = threading.Lock()  # the request counters
        self._synthesis = threading.Lock()  # one synthesis at a time: it uses every core already
        self._stop = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on."""
        return self.socket.getsockname()[:2]

    def speak(self, text: str):
        """The float32 little-endian byte chunks of ``text``'s speech."""
        from flowtts.synthesis import stream

        for wave in stream(
            self.model, self.reference, text, vocoder=self.vocoder, options=self.options, seed=self.seed
        ):
            yield np.ascontiguousarray(wave.detach().cpu().numpy(), dtype="<f4").tobytes()

    def read_text(self, conn: socket.socket) -> str | None:
        """The next text of a connection (``None`` when the client closed it).

        Raises:
            ValueError: Not UTF-8, or longer than :data:`MAX_TEXT_BYTES`.
            TimeoutError: The client stayed silent for ``idle_timeout`` seconds.
        """
        conn.settimeout(self.idle_timeout)
        data = conn.recv(RECV_BYTES)
        if not data:
            return None
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            parts, size = [decoder.decode(data)], len(data)
            # A text may arrive in several pieces (a long one always does): read on until the client
            # pauses, as a text is sent in one go and the next only after its answer.
            conn.settimeout(COMPLETION_WAIT)
            waited = False
            while size <= MAX_TEXT_BYTES:
                try:
                    more = conn.recv(RECV_BYTES)
                except TimeoutError:
                    if waited or not decoder.getstate()[0]:
                        break
                    waited = True  # inside a character: the rest must be on its way
                    conn.settimeout(1.0)
                    continue
                if not more:
                    break
                size += len(more)
                parts.append(decoder.decode(more))
            parts.append(decoder.decode(b"", final=True))
        except UnicodeDecodeError as error:
            self._drain(conn)
            raise ValueError(f"the text is not UTF-8 ({error.reason} at byte {error.start})") from None
        finally:
            conn.settimeout(self.idle_timeout)
        text = "".join(parts)
        if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            self._drain(conn)
            raise ValueError(f"text too long: at most {MAX_TEXT_BYTES} bytes of UTF-8 per request")
        return text

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        """Discard what the client is still sending of a refused text."""
        conn.settimeout(COMPLETION_WAIT)
        try:
            while conn.recv(RECV_BYTES):
                pass
        except (TimeoutError, OSError):
            pass

    def _count(self) -> int:
        with self._lock:
            self.requests += 1
            return self.requests

    def answer(self, conn: socket.socket, text: str, number: int) -> None:
        """Speak ``text`` to ``conn``: its audio, or an error answer, then ``END``."""
        try:
            text = text.strip()
            if not text:
                raise ValueError("the text is empty")
            with self._synthesis:
                for chunk in self.speak(text):
                    conn.sendall(chunk)
        except (ConnectionError, TimeoutError):
            raise  # the client is gone: nothing to answer
        except Exception as error:  # noqa: BLE001 -- one request's failure is that client's answer, never the server's end
            self.refuse(conn, number, error)
            return
        conn.sendall(END)

    def refuse(self, conn: socket.socket, number: int, error: BaseException) -> None:
        """Log a failed request and tell the client why."""
        with self._lock:
            self.errors += 1
        message = str(error) or type(error).__name__
        if not isinstance(error, (ValueError, TypeError, ImportError)):
            message = f"{type(error).__name__}: {message}"
            log.exception("request %d failed", number)
        else:
            log.warning("request %d not spoken: %s", number, message)
        conn.sendall(error_message(message) + END)

    def handle(self, conn: socket.socket, max_requests: int | None = None) -> None:
        """Answer the texts of one connection until the client closes it, goes idle, or ``max_requests``
        texts have been served in all."""
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while not self._stop.is_set():
            try:
                text = self.read_text(conn)
            except TimeoutError:
                log.info("idle client disconnected after %.0f s", self.idle_timeout)
                return
            except ValueError as error:
                number = self._count()
                self.refuse(conn, number, error)
            else:
                if text is None:
                    return
                number = self._count()
                self.answer(conn, text, number)
            if max_requests is not None and number >= max_requests:
                self._stop.set()

    def _serve_client(self, conn: socket.socket, peer, slots: threading.Semaphore, max_requests) -> None:
        try:
            with conn:
                self.handle(conn, max_requests)
        except (ConnectionError, OSError) as error:  # a client that went away mid-answer
            log.warning("client %s:%d: %s", *peer[:2], error)
        finally:
            slots.release()

    def serve_forever(self, max_requests: int | None = None) -> None:
        """Accept clients, each in its own thread (at most ``max_clients`` at once); return after
        ``max_requests`` texts (``None``: never) once their answers are sent, or after :meth:`shutdown`."""
        slots = threading.Semaphore(self.max_clients)
        threads: list[threading.Thread] = []
        with self.socket:
            self.socket.settimeout(0.1)
            while not self._stop.is_set():
                if not slots.acquire(timeout=0.1):
                    continue
                try:
                    conn, peer = self.socket.accept()
                except TimeoutError:
                    slots.release()
                    continue
                log.info("client %s:%d", *peer[:2])
                thread = threading.Thread(target=self._serve_client, args=(conn, peer, slots, max_requests))
                thread.daemon = True
                thread.start()
                threads = [t for t in threads if t.is_alive()] + [thread]
        for thread in threads:
            thread.join(timeout=self.idle_timeout)

    def shutdown(self) -> None:
        """Stop accepting; :meth:`serve_forever` returns once the open connections end."""
        self._stop.set()


def read_answer(conn: socket.socket) -> np.ndarray:
    """Client side: the samples of one answer (everything up to ``END``), as float32.

    Raises:
        ServerError: The server answered with an error (its message).
        ConnectionError: The connection closed before ``END``.
    """
    data = b""
    while not (data.endswith(END) and (len(data) - len(END)) % 4 == 0):
        chunk = conn.recv(65_536)
        if not chunk:
            raise ConnectionError("server closed the connection before END")
        data += chunk
    payload = data[: -len(END)]
    if payload.endswith(b"\n"):
        start = payload.find(ERROR)
        while start != -1 and start % 4:
            start = payload.find(ERROR, start + 1)
        if start != -1:
            raise ServerError(payload[start + len(ERROR) :].decode("utf-8", "replace").strip())
    return np.frombuffer(payload, dtype="<f4")
