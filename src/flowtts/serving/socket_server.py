"""A speech server on a TCP socket, spoken to as F5-TTS's ``socket_server.py`` is.

The protocol is upstream's, so its ``socket_client.py`` works unchanged: the client sends a text (UTF-8),
the server answers with the speech as raw 32-bit float samples (little-endian, mono, the model's sample
rate) as each sentence-level chunk is done (:func:`flowtts.synthesis.stream`; with the neural vocoder, as
each second or so of it is vocoded), then the three bytes ``END``;
the client may send the next text on the same connection. The model, vocoder and reference are loaded
once.

Beyond upstream:

* A text is read until it is complete: until the client pauses for :data:`COMPLETION_WAIT` seconds
  outside a UTF-8 character, up to :data:`MAX_TEXT_BYTES` in all, and within ``request_timeout`` seconds
  of its first byte (a client that trickles bytes is answered with an error and disconnected then).
* A request that fails (not UTF-8, empty, too long, a text the model cannot read, any exception while
  speaking) is logged and answered with ``ERROR: <message>`` (padded with spaces to a multiple of 4 bytes
  and ended by a newline) and then ``END``, after whatever audio was already sent; the connection stays
  usable and the server keeps serving. :func:`read_answer` raises :class:`ServerError` with the message.
* Clients are served concurrently, up to ``max_clients`` connections at a time. Their syntheses run one
  chunk at a time, in the order asked for; the audio is sent outside that turn, each chunk within
  ``send_timeout`` seconds, so a client that does not read its answer delays no one (it is disconnected).
* A connection waiting silently for its next text holds its place for at most ``idle_timeout`` seconds,
  and gives it up at once to a new client when every place is taken (:data:`EVICT_AFTER`). A new client
  finding every place busy with a request is answered ``ERROR: busy ...`` at once and disconnected.
* It listens on ``127.0.0.1`` unless told otherwise.
"""

from __future__ import annotations

import codecs
import logging
import math
import socket
import threading
import time
from collections.abc import Callable

import numpy as np

log = logging.getLogger("flowtts")

END = b"END"
ERROR = b"ERROR: "
RECV_BYTES = 65_536  # one read, as upstream's server reads a text
MAX_TEXT_BYTES = 1 << 20  # a longer text is refused
COMPLETION_WAIT = 0.05  # seconds of silence that end a text
# A connection waiting silently for its next text for at least this many seconds gives its place to a new
# client when all are taken (a client that connects sends its text at once: this spares it the race).
EVICT_AFTER = 0.5
TURNED_AWAY_AT_ONCE = 16  # clients told "busy" concurrently; more are disconnected without a word
BUSY_LINGER = 1.0  # seconds a client told "busy" has to read it before the connection is closed


class ServerError(RuntimeError):
    """The server refused or failed a request; the message is the server's."""


class RequestTimeout(Exception):
    """A text did not arrive whole within the server's ``request_timeout``."""


def error_message(message: str) -> bytes:
    """The bytes of an error answer (before ``END``): ``ERROR: message``, space-padded, a newline."""
    body = ERROR + " ".join(str(message).split()).encode("utf-8")
    padding = -(len(body) + 1) % 4
    return body + b" " * padding + b"\n"


def check_settings(
    *, max_clients=4, idle_timeout=60.0, request_timeout=10.0, send_timeout=30.0, name=lambda key: key
) -> None:
    """Raise ``ValueError`` naming the first server setting out of range.

    Args:
        max_clients: An integer >= 1.
        idle_timeout, request_timeout, send_timeout: Finite positive seconds.
        name: How a setting is called in the message (the command line passes its flag names).
    """
    if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
        raise ValueError(f"{name('max_clients')} must be an integer >= 1, got {max_clients!r}")
    for key, value in (
        ("idle_timeout", idle_timeout),
        ("request_timeout", request_timeout),
        ("send_timeout", send_timeout),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name(key)} must be positive seconds, got {value!r}")


class _Turns:
    """A lock granted in the order it was asked for (``threading.Lock`` lets the thread that released it
    take it straight back, which would let one long text starve the others)."""

    def __init__(self):
        self._changed = threading.Condition()
        self._issued = 0
        self._serving = 0

    def __enter__(self):
        with self._changed:
            ticket = self._issued
            self._issued += 1
            self._changed.wait_for(lambda: self._serving == ticket)

    def __exit__(self, *exc):
        with self._changed:
            self._serving += 1
            self._changed.notify_all()


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
        max_clients: Connections served at once; a new one finding every place busy with a request is
            answered ``ERROR: busy ...``.
        idle_timeout: Seconds a connected client may wait silently for its next text.
        request_timeout: Seconds a text may take to arrive, from its first byte to its last.
        send_timeout: Seconds each chunk of an answer may take to send (a client that does not read is
            disconnected then).

    Raises:
        ValueError: Options out of range, or bad server settings.
        OSError: The address cannot be listened on.
    """

    SEND_BUFFER: int | None = None  # bytes of each connection's kernel send buffer (None: the system's)

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
        request_timeout: float = 10.0,
        send_timeout: float = 30.0,
    ):
        from flowtts.synthesis import check_options

        if options.remove_silence:
            raise ValueError("remove_silence needs the whole output; a server streams, so it cannot be used")
        check_options(options)
        check_settings(
            max_clients=max_clients,
            idle_timeout=idle_timeout,
            request_timeout=request_timeout,
            send_timeout=send_timeout,
        )
        self.model, self.reference, self.vocoder, self.options, self.seed = model, reference, vocoder, options, seed
        self.max_clients = max_clients
        self.idle_timeout, self.request_timeout = float(idle_timeout), float(request_timeout)
        self.send_timeout = float(send_timeout)
        self.socket = socket.create_server((host, port))
        self.requests = 0
        self.errors = 0
        self.turned_away = 0
        self._lock = threading.Lock()  # the counters and the places
        self._places: dict[socket.socket, float | None] = {}  # connection -> since when it waits idle (None: busy)
        self._evicted: set[socket.socket] = set()
        self._synthesis = _Turns()  # one chunk synthesised at a time: it uses every core already
        self._turning_away = threading.BoundedSemaphore(TURNED_AWAY_AT_ONCE)
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

    # ----------------------------------------------------------------- places

    def _admit(self, conn: socket.socket) -> bool:
        """Give ``conn`` a place, taking it from the longest-idle connection when all are taken."""
        now = time.monotonic()
        with self._lock:
            if len(self._places) >= self.max_clients:
                idle = [(since, c) for c, since in self._places.items() if since is not None]
                since, oldest = min(idle, key=lambda item: item[0], default=(None, None))
                if oldest is None or now - since < EVICT_AFTER:
                    return False
                del self._places[oldest]
                self._evicted.add(oldest)
                _shut(oldest)  # its thread's recv returns: it sees the connection closed
                log.info("an idle client gave its place to a new one")
            self._places[conn] = now
            return True

    def _waiting(self, conn: socket.socket) -> None:
        """Mark ``conn`` idle from now, after an answer (a new connection is idle since it was admitted)."""
        with self._lock:
            if conn in self._places and self._places[conn] is None:
                self._places[conn] = time.monotonic()

    def _busy(self, conn: socket.socket) -> bool:
        """Mark ``conn`` busy with a request; ``False`` when it lost its place to a new client."""
        with self._lock:
            if conn in self._evicted:
                return False
            if conn in self._places:
                self._places[conn] = None
            return True

    def _leave(self, conn: socket.socket) -> None:
        with self._lock:
            self._places.pop(conn, None)
            self._evicted.discard(conn)

    def _close_idle(self) -> None:
        with self._lock:
            for conn, since in list(self._places.items()):
                if since is not None:
                    self._evicted.add(conn)
                    del self._places[conn]
                    _shut(conn)

    # ----------------------------------------------------------------- requests

    def read_text(self, conn: socket.socket) -> str | None:
        """The next text of a connection (``None`` when the client closed it or lost its place).

        Raises:
            ValueError: Not UTF-8, or longer than :data:`MAX_TEXT_BYTES` (the rest is discarded).
            RequestTimeout: The text did not arrive whole within ``request_timeout`` seconds of its first byte.
            TimeoutError: The client stayed silent for ``idle_timeout`` seconds.
        """
        self._waiting(conn)
        conn.settimeout(self.idle_timeout)
        try:
            data = conn.recv(RECV_BYTES)
        except TimeoutError:
            raise
        except OSError:
            data = b""
        if not data or not self._busy(conn):
            return None
        deadline = time.monotonic() + self.request_timeout
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            parts, size = [decoder.decode(data)], len(data)
            # A text may arrive in several pieces (a long one always does): read on until the client
            # pauses, as a text is sent in one go and the next only after its answer.
            waited = False
            while size <= MAX_TEXT_BYTES:
                more = self._recv_before(conn, 1.0 if waited else COMPLETION_WAIT, deadline)
                if more is None:  # a pause
                    if waited or not decoder.getstate()[0]:
                        break
                    waited = True  # inside a character: the rest must be on its way
                    continue
                if not more:
                    break
                size += len(more)
                parts.append(decoder.decode(more))
            parts.append(decoder.decode(b"", final=True))
        except UnicodeDecodeError as error:
            self._discard(conn, deadline)
            raise ValueError(f"the text is not UTF-8 ({error.reason} at byte {error.start})") from None
        text = "".join(parts)
        if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            self._discard(conn, deadline)
            raise ValueError(f"text too long: at most {MAX_TEXT_BYTES} bytes of UTF-8 per request")
        return text

    def _recv_before(self, conn: socket.socket, pause: float, deadline: float) -> bytes | None:
        """The next bytes, ``None`` after ``pause`` seconds without any.

        Raises:
            RequestTimeout: ``deadline`` comes before the pause ends.
        """
        left = deadline - time.monotonic()
        late = RequestTimeout(
            f"the text did not arrive within {self.request_timeout:g} s of its first byte (request_timeout); "
            "the connection is closed"
        )
        if left <= 0:
            raise late
        conn.settimeout(min(pause, left))
        try:
            return conn.recv(RECV_BYTES)
        except TimeoutError:
            if left < pause:
                raise late from None
            return None

    def _discard(self, conn: socket.socket, deadline: float) -> None:
        """Discard what the client is still sending of a refused text (until it pauses or ``deadline``)."""
        while self._recv_before(conn, COMPLETION_WAIT, deadline):
            pass

    def _count(self) -> int:
        with self._lock:
            self.requests += 1
            return self.requests

    def answer(self, conn: socket.socket, text: str, number: int) -> None:
        """Speak ``text`` to ``conn``: its audio, or an error answer, then ``END``.

        Each chunk is synthesised in its turn and sent outside it, within ``send_timeout`` seconds.
        """
        conn.settimeout(self.send_timeout)
        try:
            text = text.strip()
            if not text:
                raise ValueError("the text is empty")
            chunks = self.speak(text)
            while True:
                with self._synthesis:
                    chunk = next(chunks, None)
                if chunk is None:
                    break
                conn.sendall(chunk)
        except (ConnectionError, TimeoutError):
            raise  # the client is gone or does not read: nothing to answer
        except Exception as error:  # noqa: BLE001 -- one request's failure is that client's answer, never the server's end
            self.refuse(conn, number, error)
            return
        conn.sendall(END)

    def refuse(self, conn: socket.socket, number: int, error: BaseException) -> None:
        """Log a failed request and tell the client why."""
        with self._lock:
            self.errors += 1
        message = str(error) or type(error).__name__
        if not isinstance(error, (ValueError, TypeError, ImportError, RequestTimeout)):
            message = f"{type(error).__name__}: {message}"
            log.exception("request %d failed", number)
        else:
            log.warning("request %d not spoken: %s", number, message)
        conn.settimeout(self.send_timeout)
        conn.sendall(error_message(message) + END)

    def handle(self, conn: socket.socket, max_requests: int | None = None) -> None:
        """Answer the texts of one connection until the client closes it, goes idle, loses its place, misses
        a deadline, or ``max_requests`` texts have been served in all."""
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.SEND_BUFFER is not None:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.SEND_BUFFER)
        while not self._stop.is_set():
            try:
                text = self.read_text(conn)
            except TimeoutError:
                log.info("idle client disconnected after %.0f s", self.idle_timeout)
                return
            except RequestTimeout as error:
                self.refuse(conn, self._count(), error)
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

    def _serve_client(self, conn: socket.socket, peer, max_requests) -> None:
        try:
            with conn:
                self.handle(conn, max_requests)
        except OSError as error:  # a client that went away, or did not read, mid-answer
            log.warning("client %s:%d: %s", *peer[:2], error or type(error).__name__)
        finally:
            self._leave(conn)

    def _turn_away(self, conn: socket.socket) -> None:
        """Answer a client that finds every place busy ``ERROR: busy ...``, in a short thread of its own."""
        with self._lock:
            self.turned_away += 1
        log.info("client turned away: all %d places are busy", self.max_clients)
        if not self._turning_away.acquire(blocking=False):
            conn.close()
            return
        threading.Thread(target=self._say_busy, args=(conn,), daemon=True).start()

    def _say_busy(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(BUSY_LINGER)
                message = f"busy: all {self.max_clients} connections are serving requests; try again shortly"
                conn.sendall(error_message(message) + END)
                conn.shutdown(socket.SHUT_WR)
                # Read what the client sent until it closes: closing with its text unread would reset the
                # connection, and the client could lose the answer.
                deadline = time.monotonic() + BUSY_LINGER
                while time.monotonic() < deadline and conn.recv(RECV_BYTES):
                    pass
        except OSError:
            pass
        finally:
            self._turning_away.release()

    def serve_forever(self, max_requests: int | None = None) -> None:
        """Accept clients, each in its own thread (at most ``max_clients`` at once); return after
        ``max_requests`` texts (``None``: never) once their answers are sent, or after :meth:`shutdown`."""
        threads: list[threading.Thread] = []
        with self.socket:
            self.socket.settimeout(0.1)
            while not self._stop.is_set():
                try:
                    conn, peer = self.socket.accept()
                except TimeoutError:
                    continue
                if not self._admit(conn):
                    self._turn_away(conn)
                    continue
                log.info("client %s:%d", *peer[:2])
                thread = threading.Thread(target=self._serve_client, args=(conn, peer, max_requests))
                thread.daemon = True
                thread.start()
                threads = [t for t in threads if t.is_alive()] + [thread]
        self._close_idle()
        for thread in threads:
            thread.join(timeout=self.request_timeout + self.send_timeout)

    def shutdown(self) -> None:
        """Stop accepting; :meth:`serve_forever` returns once the requests in progress are answered."""
        self._stop.set()


def _shut(conn: socket.socket) -> None:
    """End both directions of ``conn`` (a thread blocked reading it sees the connection closed)."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


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
