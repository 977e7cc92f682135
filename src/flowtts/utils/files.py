"""Atomic file output: write to a temporary name in the same directory, then rename."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block succeeds.

    A crash or an exception leaves no partial file behind (and an existing ``path`` untouched).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_writable_directory(directory: str, create: bool = False) -> None:
    """``ValueError`` unless files can be created in ``directory`` (or, with ``create``, in the nearest existing
    folder above it, where it will be made). A file is created and removed to find out."""
    import tempfile

    directory = os.path.abspath(directory or ".")
    probe = directory
    if create:
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        if os.path.exists(probe):
            raise ValueError(f"{probe} is a file, not a directory")
        raise ValueError(f"output directory does not exist: {directory}")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".flowtts-write-test-"):
            pass
    except OSError as error:
        # /proc and /sys exist but refuse new files with "No such file or directory", which misleads
        reason = "it does not take new files" if error.errno == errno.ENOENT else error.strerror or str(error)
        raise ValueError(f"cannot write to {probe}: {reason}; choose another folder") from None
