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
from flowtts.audio.vocoders import GriffinLim
from flowtts.cli import main
from flowtts.infer import InferenceOptions, prepare_reference, stream
from flowtts.model.build import build_model
from flowtts.serve import END, SpeechServer, read_answer


@pytest.fixture(scope="module")
def voice():
    model = randomise(build_model("tiny"), std=0.02).eval()
    wave = torch.sin(torch.arange(36000) / 6.0) * 0.1
    options = InferenceOptions(steps=3)
    return model, prepare_reference(model, wave, "A clip.", options), GriffinLim(model.mel_spec, n_iter=2), options


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
            conn.sendall(b"\xff\xfe not utf-8")  # refused, answered with END alone
            assert read_answer(conn).size == 0
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
    assert END == b"END"
