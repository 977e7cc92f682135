"""The preferences file: one JSON object per line (JSON lines), appended to and never rewritten.

A record holds one answer: the text said, the prompt (``prompt_text``, and the ``prompt_frames`` leading
frames of each mel), the two log-mels ``mel_a`` and ``mel_b`` ``(n, d)`` as the model's ``sample()``
returned them (prompt frames included), each stored inline as ``{"shape": [n, d], "dtype": "<f2", "data":
base64}`` (float16, little-endian), the settings each was sampled with, the ``choice`` (``"a"``, ``"b"`` or
``"same"``), whether a person chose (``human``) and who (``judge``: ``"listener"`` or the machine judge's
name), a unique ``id`` and the ``time`` (ISO 8601, UTC).

A kill cannot lose or tear an earlier answer: each answer is one complete line written by a single
``os.write`` on an ``O_APPEND`` descriptor and then flushed to disk (``fsync``), under an exclusive lock. A
kill in the middle of that write can only leave a torn last line (no newline, or not JSON): readers ignore
it, and the next append cuts it off (the file is truncated to its last complete line) before writing.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

CHOICES = ("a", "b", "same")
LISTENER = "listener"
MEL_DTYPE = "<f2"  # float16, little-endian
FLOAT16_MAX = 65504.0
# Every record line starts with this: a torn tail is a prefix of a line, anything else is not ours.
LINE_START = b'{"id":"'
FIELDS = (
    "id",
    "time",
    "text",
    "prompt_text",
    "prompt_frames",
    "mel_a",
    "mel_b",
    "settings_a",
    "settings_b",
    "choice",
    "human",
    "judge",
)
_CHUNK = 1 << 16


def now() -> str:
    """The current time as the records write it (ISO 8601, UTC, seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def new_id(prefix: str = "") -> str:
    """A fresh record id (a random UUID's hex), after ``prefix`` and a colon when one is given."""
    return f"{prefix}:{uuid.uuid4().hex}" if prefix else uuid.uuid4().hex


@dataclass
class PreferencePair:
    """One answer: which of two samples of ``text`` is preferred.

    Attributes:
        text: What the generated part says.
        prompt_text: What the prompt says (``""`` when the samples are unprompted).
        prompt_frames: Leading frames of each mel that are the prompt (``0 <= prompt_frames < n``).
        mel_a, mel_b: Log-mels ``(n, d)``, float32, as ``sample()`` returned them, prompt frames included;
            the two may differ in ``n`` but not in ``d``. Stored as float16.
        choice: ``"a"``, ``"b"`` or ``"same"``.
        settings_a, settings_b: How each was sampled (model, seed, steps...), JSON values.
        human: Whether a person chose.
        time: When (ISO 8601, UTC; default: now).
        judge: Who chose: ``"listener"`` or a machine judge's name.
        id: Unique; merging keeps one record per id (default: a new random one).
    """

    text: str
    prompt_text: str
    prompt_frames: int
    mel_a: torch.Tensor
    mel_b: torch.Tensor
    choice: str
    settings_a: dict = field(default_factory=dict)
    settings_b: dict = field(default_factory=dict)
    human: bool = True
    time: str = field(default_factory=now)
    judge: str = LISTENER
    id: str = field(default_factory=new_id)


def _nonempty_string(value, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def check_pair(pair: PreferencePair) -> None:
    """Refuse a pair that cannot be written or trained on, naming the field.

    Raises:
        ValueError: An unknown ``choice``, mels that are not ``(n, d)`` with the same ``d`` (or hold values
            float16 cannot), ``prompt_frames`` not an integer in ``0..n-1`` for both mels, an empty ``text``,
            ``id`` or ``judge``, a ``prompt_text`` that is not a string, ``human`` not a bool, ``time`` not
            ISO 8601, settings that are not JSON objects.
    """
    if not isinstance(pair, PreferencePair):
        raise ValueError(f"pair must be a PreferencePair, got {type(pair).__name__}")
    if pair.choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, got {pair.choice!r}")
    _nonempty_string(pair.id, "id")
    if "\n" in pair.id or "\r" in pair.id:
        raise ValueError(f"id must be one line, got {pair.id!r}")
    _nonempty_string(pair.text, "text")
    _nonempty_string(pair.judge, "judge")
    if not isinstance(pair.prompt_text, str):
        raise ValueError(f"prompt_text must be a string ('' when unprompted), got {pair.prompt_text!r}")
    if not isinstance(pair.human, bool):
        raise ValueError(f"human must be True or False, got {pair.human!r}")
    _check_time(pair.time)
    shapes = [_check_mel(pair.mel_a, "mel_a"), _check_mel(pair.mel_b, "mel_b")]
    if shapes[0][1] != shapes[1][1]:
        raise ValueError(f"mel_a and mel_b must have the same d (mel channels), got {shapes[0][1]} and {shapes[1][1]}")
    frames = pair.prompt_frames
    shortest = min(n for n, _ in shapes)
    if isinstance(frames, bool) or not isinstance(frames, int) or not 0 <= frames < shortest:
        raise ValueError(
            f"prompt_frames must be an integer in 0..{shortest - 1} (the mels have {shapes[0][0]} and "
            f"{shapes[1][0]} frames, at least one of them generated), got {frames!r}"
        )
    for name in ("settings_a", "settings_b"):
        value = getattr(pair, name)
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a dict, got {type(value).__name__}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must hold JSON values only: {error}") from None


def _check_time(value) -> None:
    try:
        datetime.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"time must be an ISO 8601 date and time, got {value!r}") from None


def _check_mel(mel, name: str) -> tuple[int, int]:
    if not isinstance(mel, torch.Tensor) or mel.ndim != 2 or mel.shape[0] < 1 or mel.shape[1] < 1:
        raise ValueError(f"{name} must be a log-mel tensor (n, d), got {getattr(mel, 'shape', type(mel).__name__)}")
    if not mel.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {mel.dtype}")
    if not torch.isfinite(mel).all() or float(mel.abs().max()) > FLOAT16_MAX:
        raise ValueError(f"{name} must be finite and within float16's range (|x| <= {FLOAT16_MAX:g})")
    return int(mel.shape[0]), int(mel.shape[1])


def _encode_mel(mel: torch.Tensor) -> dict:
    array = mel.detach().to("cpu", torch.float32).numpy().astype(MEL_DTYPE)
    return {"shape": list(array.shape), "dtype": MEL_DTYPE, "data": base64.b64encode(array.tobytes()).decode("ascii")}


def _decode_mel(value, name: str) -> torch.Tensor:
    if not isinstance(value, dict) or set(value) != {"shape", "dtype", "data"}:
        raise ValueError(f"{name} must be an object with shape, dtype and data")
    shape = value["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
    ):
        raise ValueError(f"{name}.shape must be [n, d] with n, d >= 1, got {shape!r}")
    if value["dtype"] != MEL_DTYPE:
        raise ValueError(f"{name}.dtype must be {MEL_DTYPE!r} (float16, little-endian), got {value['dtype']!r}")
    try:
        raw = base64.b64decode(value["data"], validate=True)
    except (TypeError, ValueError):
        raise ValueError(f"{name}.data is not base64") from None
    if len(raw) != shape[0] * shape[1] * 2:
        need = shape[0] * shape[1] * 2
        raise ValueError(f"{name}.data holds {len(raw)} bytes; shape {shape} in float16 takes {need}")
    array = np.frombuffer(raw, dtype=MEL_DTYPE).reshape(shape).astype(np.float32)
    return torch.from_numpy(array)


def encode_pair(pair: PreferencePair) -> bytes:
    """The record line of ``pair`` (UTF-8, ending in a newline), checked by :func:`check_pair`.

    Raises:
        ValueError: As :func:`check_pair`.
    """
    check_pair(pair)
    record = {
        "id": pair.id,
        "time": pair.time,
        "text": pair.text,
        "prompt_text": pair.prompt_text,
        "prompt_frames": pair.prompt_frames,
        "mel_a": _encode_mel(pair.mel_a),
        "mel_b": _encode_mel(pair.mel_b),
        "settings_a": pair.settings_a,
        "settings_b": pair.settings_b,
        "choice": pair.choice,
        "human": pair.human,
        "judge": pair.judge,
    }
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
    return line.encode("utf-8")


def decode_pair(record, where: str = "record") -> PreferencePair:
    """The :class:`PreferencePair` of a parsed record (``where`` names it in messages).

    Raises:
        ValueError: A missing or bad field, named.
    """
    if not isinstance(record, dict):
        raise ValueError(f"{where} is not a JSON object")
    missing = [name for name in FIELDS if name not in record]
    if missing:
        raise ValueError(f"{where} lacks the field {missing[0]!r} (a preferences record has {', '.join(FIELDS)})")
    try:
        pair = PreferencePair(
            text=record["text"],
            prompt_text=record["prompt_text"],
            prompt_frames=record["prompt_frames"],
            mel_a=_decode_mel(record["mel_a"], "mel_a"),
            mel_b=_decode_mel(record["mel_b"], "mel_b"),
            choice=record["choice"],
            settings_a=record["settings_a"],
            settings_b=record["settings_b"],
            human=record["human"],
            time=record["time"],
            judge=record["judge"],
            id=record["id"],
        )
        check_pair(pair)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return pair


def _is_torn(tail: bytes) -> bool:
    """Whether ``tail`` (after the last newline) can be the start of a record line cut short by a kill
    (or the zeros a file system leaves after a crash)."""
    tail = tail.rstrip(b"\0")
    return tail.startswith(LINE_START) or LINE_START.startswith(tail)


def _not_ours(path, detail: str) -> ValueError:
    return ValueError(f"{os.fspath(path)} is not a preferences file (JSON lines of flowtts answers): {detail}")


def _parse_line(line: bytes):
    try:
        return json.loads(line)
    except ValueError:
        return None


def _read_lines(path) -> list[tuple[int, bytes, dict]]:
    """``(line number, line, record)`` of every complete record line of ``path`` (a torn last line left out).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a preferences file, or a line before the last that is not a record.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"preferences file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" for a complete file
    if tail and not _is_torn(tail):
        raise _not_ours(path, f"line {len(lines) + 1} is not a record")
    out = []
    for number, line in enumerate(lines, start=1):
        record = _parse_line(line) if line.startswith(LINE_START) else None
        if record is None:
            if number == len(lines) and not tail and _is_torn(line):
                break  # a torn last line that happens to end in a newline: ignored, cut before the next append
            raise _not_ours(path, f"line {number} is not a JSON record")
        out.append((number, line, record))
    return out


def read_pairs(path: str | os.PathLike) -> list[PreferencePair]:
    """Every complete answer of a preferences file, in the order written (a torn last line is ignored).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a preferences file, or a bad record (its line and field named).
    """
    return [decode_pair(record, f"{os.fspath(path)} line {n}") for n, _, record in _read_lines(path)]


def pair_ids(path: str | os.PathLike) -> list[str]:
    """The ids of every complete answer (without decoding the mels); ``[]`` for a missing file.

    Raises:
        ValueError: Not a preferences file.
    """
    if not os.path.exists(path):
        return []
    ids = []
    for n, _, record in _read_lines(path):
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            raise ValueError(f"{os.fspath(path)} line {n} has no id")
        ids.append(record["id"])
    return ids


def count_pairs(path: str | os.PathLike) -> int:
    """How many complete answers a preferences file holds (0 for a missing file), counted without parsing
    them (only its first and last lines are checked).

    Raises:
        ValueError: Not a preferences file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return 0
    fd = os.open(path, os.O_RDONLY)
    try:
        end = _complete_end(fd, path)
        count = position = 0
        while position < end:
            chunk = os.pread(fd, min(_CHUNK * 16, end - position), position)
            count += chunk.count(b"\n")
            position += len(chunk)
    finally:
        os.close(fd)
    return count


def _last_line_start(fd: int, end: int) -> int:
    """Offset of the first byte after the last newline before ``end`` (0 when there is none)."""
    position = end
    while position > 0:
        start = max(0, position - _CHUNK)
        chunk = os.pread(fd, position - start, start)
        found = chunk.rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
    return 0


def _complete_end(fd: int, path: str) -> int:
    """Where the file's complete records end: its size, or the start of a torn last line.

    Raises:
        ValueError: The file is not a preferences file.
    """
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    head = os.pread(fd, len(LINE_START), 0)
    if not head.startswith(LINE_START[: len(head)]) and not _is_torn(head):
        raise _not_ours(path, "its first line is not a record")
    start = _last_line_start(fd, size)
    if start < size:  # no newline at the end: a torn line, or something that is not ours
        tail = os.pread(fd, min(size - start, len(LINE_START) + 1), start)
        if not _is_torn(tail):
            raise _not_ours(path, "its last line is not a record")
        return start
    # ends in a newline: the last line must be a whole record
    previous = _last_line_start(fd, size - 1)
    line = os.pread(fd, size - previous, previous)
    if line.startswith(LINE_START) and _parse_line(line) is not None:
        return size
    if not _is_torn(line[: len(LINE_START)]):
        raise _not_ours(path, "its last line is not a record")
    return previous


def append_pair(path: str | os.PathLike, pair: PreferencePair, *, max_bytes: int | None = None) -> str:
    """Append one answer to a preferences file (made when missing) as one complete line, flushed to disk.

    A torn last line left by a kill is cut off first. Appenders in other threads or processes wait for
    each other (an exclusive ``flock``).

    Args:
        path: The preferences file.
        pair: The answer.
        max_bytes: Refuse to grow the file past this many bytes (``None``: no cap).

    Returns:
        The answer's id.

    Raises:
        ValueError: A bad field (named), a file that is not a preferences file, or ``max_bytes`` reached.
        OSError: The line could not be written whole (the file is left as it was).
    """
    check_max_bytes(max_bytes)
    line = encode_pair(pair)
    path = os.fspath(path)
    created = not os.path.exists(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        _lock(fd)
        end = _complete_end(fd, path)
        if max_bytes is not None and end + len(line) > max_bytes:
            raise ValueError(
                f"{path} holds {end} bytes; one more answer ({len(line)} bytes) would pass its cap of "
                f"{max_bytes} bytes: export it and start a new file"
            )
        if end < os.fstat(fd).st_size:
            os.ftruncate(fd, end)
        written = os.write(fd, line)  # O_APPEND: at the end, in one piece
        if written != len(line):
            os.ftruncate(fd, end)
            raise OSError(f"only {written} of {len(line)} bytes of the answer were written to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock
    if created:
        _sync_folder(os.path.dirname(os.path.abspath(path)))  # the new file's name survives a crash too
    return pair.id


def _sync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible everywhere (Windows): the data itself is on disk
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock between processes
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def _write_lines(out: str | os.PathLike, lines: Iterable[bytes]) -> None:
    """Write ``lines`` to ``out`` atomically (a temporary file renamed over it), flushed to disk."""
    from flowtts.utils.files import atomic_output

    with atomic_output(out) as tmp:
        with open(tmp, "wb") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())


def _valid_lines(path) -> list[tuple[str, bytes]]:
    """``(id, line)`` of every complete record of ``path``, each checked (mels decoded)."""
    lines = []
    for n, line, record in _read_lines(path):
        decode_pair(record, f"{os.fspath(path)} line {n}")
        lines.append((record["id"], line + b"\n"))
    return lines


def export_pairs(path: str | os.PathLike, out: str | os.PathLike) -> int:
    """Copy the valid answers of ``path`` to ``out`` (written atomically; a torn last line left out).

    Returns:
        The number of answers written.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a preferences file, or a bad record (named).
    """
    lines = _valid_lines(path)
    _write_lines(out, (line for _, line in lines))
    return len(lines)


def copy_complete(path: str | os.PathLike, out: str | os.PathLike) -> int:
    """Copy ``path`` up to the end of its last complete record to ``out`` (atomically), byte for byte.

    Records were checked when they were appended, so nothing is decoded: memory stays at one buffer whatever
    the file's size (the app's download).

    Returns:
        The number of bytes copied.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a preferences file.
    """
    from flowtts.utils.files import atomic_output

    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        end = _complete_end(fd, path)
        with atomic_output(out) as tmp, open(tmp, "wb") as f:
            position = 0
            while position < end:
                chunk = os.pread(fd, min(_CHUNK * 16, end - position), position)
                if not chunk:
                    break
                f.write(chunk)
                position += len(chunk)
    finally:
        os.close(fd)
    return end


def merge_pairs(inputs: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Join preferences files into ``out`` (written atomically), one record per id: the first seen wins.

    ``out`` may be one of ``inputs``; every input is read before ``out`` is written.

    Returns:
        The number of answers written.

    Raises:
        ValueError: No inputs, or an input that is not a preferences file (named).
        FileNotFoundError: A missing input.
    """
    if isinstance(inputs, (str, os.PathLike)) or not inputs:
        raise ValueError("inputs must be a list of one or more preferences files")
    kept: dict[str, bytes] = {}
    for path in inputs:
        for record_id, line in _valid_lines(path):
            kept.setdefault(record_id, line)
    _write_lines(out, kept.values())
    return len(kept)


def check_max_bytes(value) -> None:
    """Refuse a ``max_bytes`` cap that is not a positive integer (or ``None``)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"max_bytes must be a positive integer or None, got {value!r}")


__all__ = [
    "CHOICES",
    "PreferencePair",
    "append_pair",
    "check_pair",
    "count_pairs",
    "export_pairs",
    "merge_pairs",
    "pair_ids",
    "read_pairs",
]
