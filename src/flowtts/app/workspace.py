"""The web app's workspace: the one folder whose files the page may name, read and write.

Every path a page field gives (a dataset to prepare, an output folder, a run folder, a checkpoint, a path
in a run's arguments) is resolved against the workspace, symbolic links included, and refused unless the
result lies inside it -- before anything is read or written. Outside data comes in as uploads. The app
writes only into folders it made: each holds a :data:`MARKER` file, and an existing folder without one is
never written into.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from collections.abc import Sequence

MARKER = ".flowtts-app"
DEFAULT_NAME = "flowtts_workspace"
MAX_UNPACKED_BYTES = 4 << 30  # a dataset upload unpacks to at most 4 GiB
MAX_UNPACKED_FILES = 200_000


class Workspace:
    """The folder the page works in (made on first use).

    Args:
        root: The folder; default ``flowtts_workspace`` in the current directory.

    Raises:
        ValueError: ``root`` exists and is not a folder.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        root = os.fspath(root) if root is not None else os.path.join(os.getcwd(), DEFAULT_NAME)
        if os.path.exists(root) and not os.path.isdir(root):
            raise ValueError(f"workspace {root} exists and is not a folder")
        os.makedirs(root, exist_ok=True)
        self.root = os.path.realpath(root)

    def __repr__(self) -> str:
        return f"Workspace({self.root!r})"

    def show(self, path: str) -> str:
        """``path`` as the page shows it: relative to the workspace."""
        relative = os.path.relpath(path, self.root)
        return "." if relative == "." else relative

    def resolve(self, value, what: str) -> str:
        """The real path of a page field's ``value`` (relative to the workspace), refused outside it.

        Args:
            value: The path typed in the page.
            what: The field's name, for messages.

        Raises:
            ValueError: Empty, or (after ``..`` and links) outside the workspace.
        """
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"give {what} (a path inside the workspace)")
        if "\0" in value:
            raise ValueError(f"{what} {value!r} is not a path")
        path = os.path.realpath(os.path.join(self.root, value.strip()))
        if os.path.commonpath([self.root, path]) != self.root:
            raise ValueError(
                f"{what} {value.strip()!r} is outside the workspace: the page reads and writes only inside it "
                "(relative paths start there; upload files to bring them in)"
            )
        return path

    def existing(self, value, what: str, *, folder: bool | None = None) -> str:
        """:meth:`resolve` for something that must exist (a folder, a file, or either for ``None``).

        Raises:
            ValueError: Outside the workspace.
            FileNotFoundError: Missing, or not of the kind asked for.
        """
        path = self.resolve(value, what)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{what} {self.show(path)!r}: no such file or folder in the workspace")
        if folder is True and not os.path.isdir(path):
            raise FileNotFoundError(f"{what} {self.show(path)!r} is not a folder")
        if folder is False and not os.path.isfile(path):
            raise FileNotFoundError(f"{what} {self.show(path)!r} is not a file")
        return path

    def made_by_app(self, path: str) -> bool:
        """Whether ``path`` is a folder the app made (it holds :data:`MARKER`)."""
        return os.path.isdir(path) and os.path.isfile(os.path.join(path, MARKER))

    def writable_folder(self, value, what: str) -> tuple[str, bool]:
        """The folder a page action may write into: new, or made by the app. Nothing is created.

        Returns:
            ``(path, exists)``.

        Raises:
            ValueError: Outside the workspace, the workspace itself, a file, or a folder the app did not make.
        """
        path = self.resolve(value, what)
        if path == self.root:
            raise ValueError(f"{what} must be a folder inside the workspace, not the workspace itself")
        if not os.path.exists(path):
            return path, False
        if not os.path.isdir(path):
            raise ValueError(f"{what} {self.show(path)!r} is a file; give a folder name")
        if not self.made_by_app(path):
            raise ValueError(
                f"{what} {self.show(path)!r} exists and was not made by the app; the app writes only into "
                "folders it made (choose a new name)"
            )
        return path, True

    def make_folder(self, path: str) -> None:
        """Create ``path`` (checked by :meth:`writable_folder`) and mark it as the app's."""
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, MARKER), "w", encoding="utf-8") as f:
            f.write("made by flowtts app\n")

    def unpack(self, uploads: Sequence[str], folder: str) -> str:
        """Copy uploaded files into ``folder`` (made by the app): a ``.zip`` is unpacked, other files copied.

        Returns:
            ``folder``.

        Raises:
            ValueError: A zip member that would land outside ``folder`` (absolute, ``..``, a link), or a zip
                over :data:`MAX_UNPACKED_BYTES` / :data:`MAX_UNPACKED_FILES`.
        """
        for upload in uploads:
            if upload.lower().endswith(".zip"):
                _unzip(upload, folder)
            else:
                shutil.copyfile(upload, os.path.join(folder, _safe_name(os.path.basename(upload))))
        return folder


def _safe_name(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    if name in ("", ".", "..") or name == MARKER:
        raise ValueError(f"uploaded file name {name!r} cannot be used")
    return name


def _unzip(archive: str, folder: str) -> None:
    root = os.path.realpath(folder)
    with zipfile.ZipFile(archive) as z:
        members = z.infolist()
        if len(members) > MAX_UNPACKED_FILES:
            raise ValueError(f"the zip holds {len(members)} files; the app unpacks at most {MAX_UNPACKED_FILES}")
        total = sum(m.file_size for m in members)
        if total > MAX_UNPACKED_BYTES:
            raise ValueError(f"the zip unpacks to {total} bytes; the app unpacks at most {MAX_UNPACKED_BYTES}")
        for member in members:
            name = member.filename.replace("\\", "/")
            parts = [p for p in name.split("/") if p not in ("", ".")]
            mode = member.external_attr >> 16
            if name.startswith("/") or ".." in parts or ":" in name or stat.S_ISLNK(mode):
                raise ValueError(f"zip member {member.filename!r} would land outside its folder (or is a link)")
            if not parts or MARKER in parts:
                continue
            target = os.path.join(root, *parts)
            if member.is_dir():
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
