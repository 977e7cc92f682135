"""Pictures: log-mels, loss and reward curves, written as PNG files on the file-only Agg backend.

Everything here needs matplotlib (the ``plot`` extra); each function says what it does without it.
"""

from __future__ import annotations

import csv
import os

import torch

from flowtts.utils.files import atomic_output


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, or ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, png_path: str) -> None:
    """Write ``fig`` as a PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def check_picture_output(path: str) -> None:
    """``ValueError`` unless ``path`` is a ``.png`` name in a writable directory; ``ImportError`` without
    matplotlib. Meant to run before the work whose picture goes there."""
    from flowtts.utils.files import check_writable_directory

    if os.path.isdir(path) or os.path.splitext(path)[1].lower() != ".png":
        raise ValueError(f"the mel picture {path} must be a .png file name")
    check_writable_directory(os.path.dirname(os.path.abspath(path)), create=True)
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError("the mel picture needs matplotlib: pip install 'flowtts[plot]'") from exc


def save_mel_png(mel: torch.Tensor, path: str, title: str = "") -> None:
    """Write a log-mel ``(d, n)`` as a picture (needs matplotlib: the ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("--save-mel needs matplotlib: pip install 'flowtts[plot]'") from exc
    fig, ax = plt.subplots(figsize=(max(4, mel.shape[1] / 60), 3))
    image = ax.imshow(mel.numpy(), origin="lower", aspect="auto", interpolation="none")
    ax.set_xlabel("frame")
    ax.set_ylabel("mel band")
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def _log_rows(csv_path: str) -> list[dict]:
    """The rows of a run's CSV log."""
    with open(csv_path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def plot_loss_curve(
    csv_path: str, png_path: str, extra: dict | None = None, ylabel: str = "flow-matching loss"
) -> bool:
    """Loss (and held-out right/wrong-text loss) against step; ``False`` without matplotlib.

    Args:
        csv_path: The run's CSV log (``step``, ``loss``, optional held-out columns).
        png_path: Where the figure goes.
        extra: More series to draw, ``label -> [(step, value), ...]`` (``None`` or empty ones skipped).
        ylabel: The y axis's label.
    """
    plt = pyplot()
    rows = _log_rows(csv_path) if plt is not None else []
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], lw=0.8, label="train loss")
    for key, label in (("val_loss", "held-out, right text"), ("wrong_text_loss", "held-out, wrong text")):
        pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=label)
    for label, pts in (extra or {}).items():
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, png_path)
    return True


def plot_reward_curve(csv_path: str, png_path: str) -> bool:
    """Mean reward and anchor distance against step; ``False`` without matplotlib or log rows."""
    plt = pyplot()
    rows = _log_rows(csv_path) if plt is not None else []
    if not rows:
        return False
    steps = [int(r["step"]) for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    top.plot(steps, [float(r["reward"]) for r in rows], lw=0.8)
    top.set_ylabel("mean reward")
    bottom.plot(steps, [float(r["anchor"]) for r in rows], lw=0.8, color="tab:orange")
    bottom.set_ylabel("anchor distance")
    bottom.set_xlabel("step")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, png_path)
    return True
