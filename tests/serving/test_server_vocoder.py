"""``flowtts serve`` with the neural vocoder: a sentence's audio leaves in pieces that join into its wave."""

from __future__ import annotations

import socket
import threading

import numpy as np
import torch

from conftest import randomise
from flowtts.config import ModelConfig
from flowtts.model.build import build_model
from flowtts.serving.socket_server import SpeechServer, read_answer
from flowtts.synthesis import InferenceOptions, prepare_reference, synthesize
from flowtts.vocoder.files import load_vocoder_file


def test_the_server_sends_vocoded_pieces_that_join_into_the_whole_wave(monkeypatch):
    import flowtts.synthesis.speech as speech

    config = ModelConfig(dim=32, depth=2, heads=2, dim_head=16, text_dim=16, conv_layers=1)
    model = randomise(build_model(config), std=0.02).eval()
    options = InferenceOptions(steps=2)
    reference = prepare_reference(model, torch.sin(torch.arange(36000) / 6.0) * 0.1, "A clip.", options)
    vocoder = load_vocoder_file("builtin")
    monkeypatch.setattr(speech, "STREAM_FRAMES", 16)
    text = "One sentence that is long enough to be vocoded in several pieces."
    server = SpeechServer(model, reference, vocoder, options, port=0, seed=7)
    pieces = list(server.speak(text))
    thread = threading.Thread(target=server.serve_forever, kwargs={"max_requests": 1})
    thread.start()
    try:
        with socket.create_connection(server.address, timeout=60) as conn:
            conn.sendall(text.encode("utf-8"))
            answer = read_answer(conn)
    finally:
        thread.join(timeout=120)
    assert not thread.is_alive()
    (whole,) = synthesize(model, reference, [text], vocoder=vocoder, options=options, seeds=[7], progress=False)
    assert len(pieces) >= whole.mel.shape[1] // 16 - 1  # the first leaves after 16 hops, not after the sentence
    assert np.array_equal(answer, np.frombuffer(b"".join(pieces), dtype="<f4"))
    assert answer.shape == tuple(whole.wave.shape) and np.abs(answer - whole.wave.numpy()).max() < 1e-4
