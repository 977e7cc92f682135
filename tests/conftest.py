"""Shared fixtures: tiny randomised models (a zero-initialised output layer would make tests trivial)."""

from __future__ import annotations

import os
import socket
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import upstream  # noqa: E402
from flowtts import CFM, DiT  # noqa: E402

TINY = dict(dim=32, depth=2, heads=2, dim_head=16, mel_dim=12, text_num_embeds=64, text_dim=16, conv_layers=2)


def randomise(module: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Fill every floating parameter with normal noise (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * std)
    return module


def make_tiny(dtype=torch.float32, seed: int = 0, dropout: float = 0.0, backbone=DiT, **overrides) -> CFM:
    cfg = {**TINY, "dropout": dropout, **overrides}
    mel_dim = cfg["mel_dim"]
    model = CFM(backbone(**cfg), mel_spec_kwargs=dict(n_mel_channels=mel_dim, n_fft=256, win_length=256, hop_length=64))
    randomise(model, seed=seed)
    return model.to(dtype)


def tiny_text(n: int = 1) -> torch.Tensor:
    """Token ids ``n x nt`` within the tiny vocabulary, padded with -1 on later rows."""
    rows = [[5, 9, 3, 7, 11, 2, 8], [4, 6, 10, 1], [12, 3, 3, 9, 5]]
    width = max(len(r) for r in rows[:n])
    out = torch.full((n, width), -1, dtype=torch.long)
    for i in range(n):
        out[i, : len(rows[i % 3])] = torch.tensor(rows[i % 3])
    return out


@pytest.fixture
def tiny():
    return make_tiny()


@pytest.fixture(autouse=True)
def _restore_grad_mode():
    # A test that leaks grad mode would hide the very bug the contract tests look for.
    before = torch.is_grad_enabled()
    yield
    assert torch.is_grad_enabled() == before, "test left grad mode changed"


def write_file(folder, name: str, text: str) -> str:
    """Write ``text`` to ``folder/name`` (UTF-8) and return the path as a string."""
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return str(path)


class RecomputingBackbone(torch.nn.Module):
    """Hides a backbone's ``condition``/``velocity``: CFM then calls its upstream-style forward at every
    step, recomputing the text conditioning (the reference the cached conditioning is checked against)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, **kwargs):
        return self.net(**kwargs)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (``item.rep_call``): fixtures read it to save artifacts.

    Under ``FLOWTTS_REQUIRE_UPSTREAM=1`` (CI) an upstream-parity test that skips, for whatever reason,
    is reported as failed: a missing or broken f5-tts must not leave CI green with no parity checked.
    """
    report = yield
    skipped = report.skipped and not hasattr(report, "wasxfail")  # an expected failure is not a skip
    if skipped and item.get_closest_marker(upstream.MARKER) is not None and upstream.required():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{upstream.REQUIRE_ENV}=1 but this upstream-parity test was skipped: {reason}"
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        f"{upstream.MARKER}: compared with upstream F5-TTS or torchdiffeq; skips where they are missing, "
        f"fails instead under {upstream.REQUIRE_ENV}=1 (CI)",
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line: how many upstream-parity cases ran and passed (CI's evidence that parity was checked)."""
    ids = {
        outcome: {r.nodeid for r in terminalreporter.stats.get(outcome, []) if upstream.MARKER in r.keywords}
        for outcome in ("passed", "failed", "error", "skipped")
    }
    bad = ids["failed"] | ids["error"]
    if not any(ids.values()) and not upstream.required():
        return
    terminalreporter.write_line(
        f"upstream parity: {len(ids['passed'] - bad)} cases passed, {len(bad)} failed, "
        f"{len(ids['skipped'] - bad)} skipped ({upstream.REQUIRE_ENV}={'1' if upstream.required() else '0'})"
    )


# The web app, running, for the client and browser tests (skipped, with the reason, where Gradio is missing).
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    pytest.importorskip("gradio", reason="the web app needs Gradio (pip install 'flowtts[app]')")
    from flowtts.app.ui import build_app, launch, shutdown

    app = build_app("builtin:student", workspace=str(tmp_path_factory.mktemp("workspace")))
    port = free_port()
    launch(app, port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    shutdown(app)
