"""The web app's test helpers."""

from __future__ import annotations

import pytest

from conftest import free_port


def start_app(workspace, **kw):
    """Build and launch the app on a free local port; returns ``(app, url)``."""
    pytest.importorskip("gradio", reason="the web app needs Gradio (pip install 'flowtts[app]')")
    from flowtts.app.ui import build_app, launch

    auth = kw.pop("auth", None)
    app = build_app(kw.pop("model", "builtin:student"), workspace=str(workspace), **kw)
    port = free_port()
    launch(app, port=port, prevent_thread_lock=True, quiet=True, auth=auth)
    return app, f"http://127.0.0.1:{port}/"
