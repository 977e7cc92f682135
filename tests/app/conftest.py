"""A running app for the client and browser tests (skipped, with the reason, where Gradio is missing)."""

from __future__ import annotations

import socket

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    pytest.importorskip("gradio", reason="the web app needs Gradio (pip install 'flowtts[app]')")
    from flowtts.app.ui import build_app, launch

    app = build_app("builtin:student")
    port = free_port()
    launch(app, port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()
