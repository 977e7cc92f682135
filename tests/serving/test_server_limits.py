"""The speech server under clients that hold on to it: idle, trickling, not reading, too many.

Loopback only, a tiny random model and a stand-in vocoder; every wait is bounded, and each test stops its
server itself.
"""

import socket
import threading
import time

import pytest
import torch
from test_socket_server import _cheap_vocoder  # the same stand-in vocoder as the protocol tests

from conftest import randomise
from flowtts.config import ModelConfig
from flowtts.model.build import build_model
from flowtts.serving import socket_server
from flowtts.serving.socket_server import END, EVICT_AFTER, ServerError, SpeechServer, check_settings, read_answer
from flowtts.synthesis import InferenceOptions, prepare_reference


@pytest.fixture(scope="module")
def voice():
    config = ModelConfig(dim=32, depth=2, heads=2, dim_head=16, text_dim=16, conv_layers=1)
    model = randomise(build_model(config), std=0.02).eval()
    options = InferenceOptions(steps=2)
    reference = prepare_reference(model, torch.sin(torch.arange(36000) / 6.0) * 0.1, "A clip.", options)
    return model, reference, _cheap_vocoder, options


class _SmallBuffers(SpeechServer):
    """Kernel send buffers small enough that an answer cannot hide in them from a client that does not read."""

    SEND_BUFFER = 4096


def _serving(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def _connect(address, receive_buffer=None):
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    conn.settimeout(10)
    conn.connect(address)
    return conn


def _ask(address, text=b"Hello there."):
    """``(seconds, samples)`` of one request on a new connection."""
    start = time.monotonic()
    with _connect(address) as conn:
        conn.sendall(text)
        answer = read_answer(conn)
    return time.monotonic() - start, answer


def _rest(conn) -> bytes:
    """Everything ``conn`` still receives until the server closes it (at most 10 s)."""
    data, deadline = b"", time.monotonic() + 10
    while time.monotonic() < deadline:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server kept the connection open")


def test_four_idle_clients_and_one_that_does_not_read_lock_no_one_out(voice):
    server = _SmallBuffers(*voice, port=0, seed=1, max_clients=4, idle_timeout=30, send_timeout=1.5)
    thread = _serving(server)
    idle = [_connect(server.address) for _ in range(4)]  # every place taken, by clients that say nothing
    time.sleep(EVICT_AFTER + 0.2)
    stuck = _connect(server.address, receive_buffer=4096)  # takes the longest-idle place
    try:
        stuck.sendall(b"A long text that nobody reads. " * 6)
        time.sleep(0.5)
        seconds, answer = _ask(server.address)  # and this one the next: served while the others hold on
        assert seconds < 5 and answer.size > 0  # before: not even accepted until --idle-timeout (60 s)
        assert _rest(idle[0]) == b"" and _rest(idle[1]) == b""  # the two longest idle gave their places up
        idle[2].sendall(b"Still connected.")  # the others keep theirs
        assert read_answer(idle[2]).size > 0
    finally:
        server.shutdown()
        thread.join(timeout=30)
        for conn in (*idle, stuck):
            conn.close()
    assert not thread.is_alive()


def test_a_client_that_does_not_read_its_answer_delays_no_one(voice):
    server = _SmallBuffers(*voice, port=0, seed=2, max_clients=4, send_timeout=1.5)
    thread = _serving(server)
    stuck = _connect(server.address, receive_buffer=4096)
    try:
        stuck.sendall(b"A long text that nobody reads. " * 6)
        time.sleep(0.5)  # its first chunk is spoken and stuck on its way out
        seconds, answer = _ask(server.address, b"Short.")
        assert seconds < 5 and answer.size > 0  # before: it waited for the stuck client's whole answer
        time.sleep(1.5 + 0.5)  # its sending began before that answer's: send_timeout is over now
        data = _rest(stuck)  # it was disconnected, its answer unfinished
        assert 0 < len(data) and not data.endswith(END)
    finally:
        server.shutdown()
        thread.join(timeout=30)
        stuck.close()
    assert not thread.is_alive()


def test_a_trickled_text_is_cut_off_at_its_deadline_and_meanwhile_a_newcomer_hears_busy(voice, monkeypatch):
    monkeypatch.setattr(socket_server, "COMPLETION_WAIT", 0.5)  # a text ends after 0.5 s of silence, not 0.05
    server = SpeechServer(*voice, port=0, seed=3, max_clients=1, request_timeout=2.0)
    thread = _serving(server)
    trickler = _connect(server.address)
    sent = threading.Event()

    def trickle():
        for _ in range(400):  # a byte every 10 ms, 4 s at most: the server never sees the text end
            try:
                trickler.sendall(b"a")
            except OSError:
                return
            sent.set()
            time.sleep(0.01)

    sender = threading.Thread(target=trickle, daemon=True)
    start = time.monotonic()
    sender.start()
    try:
        assert sent.wait(5)
        time.sleep(0.2)
        begun = time.monotonic()
        with _connect(server.address) as newcomer:
            newcomer.sendall(b"Hello.")
            with pytest.raises(ServerError, match="busy: all 1 connections are serving requests"):
                read_answer(newcomer)
        assert time.monotonic() - begun < 2  # at once; before: silence until a place freed
        with pytest.raises(ServerError, match="did not arrive within 2 s of its first byte"):
            read_answer(trickler)
        assert 1.5 < time.monotonic() - start < 5 and _rest(trickler) == b""
        sender.join(timeout=10)
        seconds, answer = _ask(server.address)  # its place is free again
        assert answer.size > 0
    finally:
        server.shutdown()
        thread.join(timeout=30)
        trickler.close()
    assert not thread.is_alive() and server.turned_away == 1


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(max_clients=0), "max_clients must be an integer >= 1, got 0"),
        (dict(max_clients=2.0), "max_clients must be an integer >= 1, got 2.0"),
        (dict(idle_timeout=float("inf")), "idle_timeout must be positive seconds, got inf"),
        (dict(request_timeout=0), "request_timeout must be positive seconds, got 0"),
        (dict(send_timeout="5"), "send_timeout must be positive seconds, got '5'"),
    ],
)
def test_bad_server_settings_are_refused_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        check_settings(**settings)
