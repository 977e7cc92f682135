"""Who may reach the web app: this machine only, or a network behind Gradio's login.

The page runs training, reads and writes its workspace and keeps CPUs busy; served beyond this machine
(a ``--host`` that is not a loopback address) it needs ``--auth USER:PASSWORD`` or ``--auth-file``.
"""

from __future__ import annotations

import ipaddress
import os

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) serves this machine only."""
    if host.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def _pair(text: str, where: str) -> tuple[str, str]:
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise ValueError(f"{where} must be USER:PASSWORD, both non-empty")
    return user, password


def read_credentials(auth: str | None = None, auth_file: str | None = None) -> list[tuple[str, str]] | None:
    """The logins of ``--auth USER:PASSWORD`` and ``--auth-file`` (one ``USER:PASSWORD`` a line, ``#`` comments).

    Returns:
        ``(user, password)`` pairs, or ``None`` when neither is given.

    Raises:
        ValueError: A value that is not ``USER:PASSWORD``, or a file without any.
        FileNotFoundError: No such file.
    """
    pairs = []
    if auth is not None:
        pairs.append(_pair(auth, "--auth"))
    if auth_file is not None:
        if not os.path.isfile(auth_file):
            raise FileNotFoundError(f"--auth-file {auth_file}: no such file")
        with open(auth_file, encoding="utf-8") as f:
            lines = [(n, line.strip()) for n, line in enumerate(f, start=1)]
        found = [_pair(line, f"--auth-file line {n}") for n, line in lines if line and not line.startswith("#")]
        if not found:
            raise ValueError(f"--auth-file {auth_file} holds no USER:PASSWORD line")
        pairs += found
    return pairs or None


def check_exposure(host: str, credentials) -> None:
    """Refuse to serve the page beyond this machine without a login.

    Raises:
        ValueError: ``host`` is not a loopback address and there are no credentials; says how to proceed.
    """
    if credentials or is_loopback(host):
        return
    raise ValueError(
        f"--host {host} serves the page to your network, and anyone who reaches it can run training, write "
        "into the workspace and keep the CPUs busy; give a login with --auth USER:PASSWORD or --auth-file FILE "
        "(one USER:PASSWORD a line), or keep the default --host 127.0.0.1"
    )
