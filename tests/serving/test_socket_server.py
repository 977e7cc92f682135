import os
import re
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from conftest import randomise
from flowtts.cli import main
from flowtts.config import ModelConfig
from flowtts.model.build import build_model
from flowtts.serving.socket_server import (
    END,
    MAX_TEXT_BYTES,
    RECV_BYTES,
    ServerError,
    SpeechServer,
    error_message,
    read_answer,
)
from flowtts.synthesis import InferenceOptions, prepare_reference, stream


def _cheap_vocoder(mel):
    """A deterministic stand-in for a vocoder (hop 256): the servers' tests are about bytes, not sound."""
    return mel.mean(dim=1).repeat_interleave(256, dim=-1) * 0.01


@pytest.fixture(scope="module")
def voice():
    config = ModelConfig(dim=32, depth=2, heads=2, dim_head=16, text_dim=16, conv_layers=1)
    model = randomise(build_model(config), std=0.02).eval()
    wave = torch.sin(torch.arange(36000) / 6.0) * 0.1
    options = InferenceOptions(steps=3)
    return model, prepare_reference(model, wave, "A clip.", options), _cheap_vocoder, options


def test_answers_are_the_streamed_speech_then_end_and_the_connection_stays_usable(voice):
    model, reference, vocoder, options = voice
    server = SpeechServer(model, reference, vocoder, options, port=0, seed=11)
    thread = threading.Thread(target=server.serve_forever, kwargs={"max_requests": 3})
    thread.start()
    texts = ["First sentence here. And a second one, so two chunks.", "Short."]
    try:
        with socket.create_connection(server.address, timeout=60) as conn:
            answers = []
            for text in texts:
                conn.sendall(text.encode("utf-8"))
                answers.append(read_answer(conn))
            conn.sendall(b"\xff\xfe not utf-8")  # refused with a message, and the connection stays usable
            with pytest.raises(ServerError, match="not UTF-8"):
                read_answer(conn)
    finally:
        thread.join(timeout=120)
    assert not thread.is_alive() and server.requests == 3
    for text, answer in zip(texts, answers):
        expected = torch.cat(list(stream(model, reference, text, vocoder=vocoder, options=options, seed=11)))
        assert answer.dtype == np.float32 and answer.shape == tuple(expected.shape)
        assert np.array_equal(answer, expected.numpy().astype(np.float32))
    assert answers[0].size > answers[1].size > 0


def test_remove_silence_cannot_be_served(voice):
    model, reference, vocoder, options = voice
    import dataclasses

    with pytest.raises(ValueError, match="cannot be used"):
        SpeechServer(model, reference, vocoder, dataclasses.replace(options, remove_silence=True), port=0)


def test_serve_command_listens_answers_and_stops_after_max_requests(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "flowtts.cli", "serve", "--port", "0", "--max-requests", "1", "--steps", "2"]
    cmd += ["--model", "builtin:student", "--seed", "0", "--threads", "1"]
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            line = proc.stderr.readline()
            match = re.search(
                r"serving on ([\d.]+):(\d+): send UTF-8 text, get float32 mono at 24000 Hz then END", line
            )
            assert match, line
            with socket.create_connection((match.group(1), int(match.group(2))), timeout=120) as conn:
                conn.sendall(b"Hello from a client.")
                answer = read_answer(conn)
            assert answer.size > 24000 * 0.5 and np.abs(answer).max() > 0.01
            assert proc.wait(timeout=60) == 0
        finally:
            proc.kill()


def test_serve_command_errors(capsys):
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port must be in 0..65535" in capsys.readouterr().err
    assert main(["serve", "--max-requests", "0"]) == 2
    assert "--max-requests must be >= 1" in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", 0)) as busy:
        assert main(["serve", "--port", str(busy.getsockname()[1]), "--steps", "2"]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
    assert main(["serve", "--steps", "0", "--speed", "-1"]) == 2  # refused at start, as infer refuses them
    assert "--steps must be an integer >= 1, at most 1000" in capsys.readouterr().err
    assert main(["serve", "--speed", "-1"]) == 2
    assert "--speed must be a positive number" in capsys.readouterr().err
    for flag in ("--idle-timeout", "--request-timeout", "--send-timeout"):
        for bad in ("0", "-1", "inf", "nan"):
            assert main(["serve", flag, bad]) == 2
            assert f"{flag} must be positive seconds, got {float(bad)}" in capsys.readouterr().err
    assert main(["serve", "--max-clients", "0"]) == 2
    assert "--max-clients must be an integer >= 1, got 0" in capsys.readouterr().err


def test_bad_options_are_refused_when_the_server_is_made(voice):
    import dataclasses

    model, reference, vocoder, options = voice
    for bad, match in (
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(speed=-1.0), "speed must be a positive number"),
        (dict(sway_sampling_coef=-2.0), "sway_sampling_coef must lie in"),
    ):
        with pytest.raises(ValueError, match=match):
            SpeechServer(model, reference, vocoder, dataclasses.replace(options, **bad), port=0)


def test_error_answers_are_aligned_and_read_back_as_errors():
    for message in ("x", "text too long", "é" * 7):
        body = error_message(message)
        assert len(body) % 4 == 0 and body.endswith(b"\n")
        left, right = socket.socketpair()
        with left, right:
            left.sendall(np.ones(3, dtype="<f4").tobytes() + body + END)  # after some audio, too
            with pytest.raises(ServerError, match=message):
                read_answer(right)


class _FlakyServer(SpeechServer):
    """Raises inside synthesis for some texts, as a missing optional extra or a bug would."""

    def speak(self, text):
        if "你好" in text:
            raise ImportError("Chinese text needs the zh extra: pip install 'flowtts[zh]'")
        if "crash" in text:
            raise RuntimeError("something broke")
        yield from super().speak(text)


def test_the_server_survives_every_client(voice):
    model, reference, vocoder, options = voice
    server = _FlakyServer(model, reference, vocoder, options, port=0, seed=5, max_clients=16, idle_timeout=3.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    address = server.address
    texts = [f"Client {i} says hello." for i in range(8)]
    answers, failures = {}, {}

    def client(name, payload, expect_error=None, hang_up=False, idle=False):
        try:
            with socket.create_connection(address, timeout=120) as conn:
                if idle:
                    conn.settimeout(30)
                    answers[name] = conn.recv(16)  # b"" once the server drops an idle client
                    return
                conn.sendall(payload)
                if hang_up:
                    conn.recv(4)  # the first samples, then gone mid-answer
                    return
                if expect_error:
                    with pytest.raises(ServerError, match=expect_error):
                        read_answer(conn)
                    answers[name] = "error"
                else:
                    answers[name] = read_answer(conn)
        except Exception as error:  # noqa: BLE001 -- reported by the assertions below
            failures[name] = error

    clients = [threading.Thread(target=client, args=(f"c{i}", t.encode())) for i, t in enumerate(texts)]
    clients += [
        threading.Thread(target=client, args=("idle", b""), kwargs={"idle": True}),
        threading.Thread(target=client, args=("utf8", b"\xff\xfe\xfd"), kwargs={"expect_error": "not UTF-8"}),
        threading.Thread(target=client, args=("zh", "你好。".encode()), kwargs={"expect_error": "zh extra"}),
        threading.Thread(target=client, args=("bug", b"please crash"), kwargs={"expect_error": "RuntimeError"}),
        threading.Thread(target=client, args=("gone", b"A long text. " * 6), kwargs={"hang_up": True}),
    ]
    try:
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=240)
        assert not any(c.is_alive() for c in clients)
        assert not failures, failures
        assert answers["idle"] == b""
        # Afterwards the server still answers, and every answer is what stream() gives for the seed.
        with socket.create_connection(address, timeout=120) as conn:
            conn.sendall(b"Still here.")
            last = read_answer(conn)
    finally:
        server.shutdown()
        thread.join(timeout=60)
    for i, text in enumerate(texts + ["Still here."]):
        expected = torch.cat(list(stream(model, reference, text, vocoder=vocoder, options=options, seed=5)))
        got = answers[f"c{i}"] if i < len(texts) else last
        assert np.array_equal(got, expected.numpy().astype(np.float32)), text
    assert server.errors >= 3 and not thread.is_alive()


def test_a_text_split_inside_a_character_at_the_buffer_boundary_is_read_whole(voice):
    model, reference, vocoder, options = voice
    server = SpeechServer(model, reference, vocoder, options, port=0, seed=1)
    text = "a" * (RECV_BYTES - 1) + "é"  # the two bytes of é straddle the first read
    left, right = socket.socketpair()
    with left, right:
        left.sendall(text.encode("utf-8"))
        assert server.read_text(right) == text
        sender = threading.Thread(target=left.sendall, args=(b"x" * (MAX_TEXT_BYTES + 10),))
        sender.start()  # more than the socket buffers: sent while the server reads
        with pytest.raises(ValueError, match="text too long"):
            server.read_text(right)
        sender.join(timeout=30)
        assert not sender.is_alive()
    server.socket.close()
