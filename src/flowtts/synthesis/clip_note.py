"""What a model does with a user's reference clip, said once before synthesis when it is not a clone.

F5-TTS users expect the clip to set the voice. A model trained on one voice (its file records
``voices: 1``), or one that speaks unprompted (``continue_reference: false``: the clip only sets the
speaking rate and the level), does not clone it; every entry point says so in the same words.
"""

from __future__ import annotations

import warnings

from flowtts.checkpoints.recorded import CONTINUE_KEY, recorded_flag, recorded_voices

CLONE_HINT = "To clone a voice, use an F5-TTS checkpoint (see 'Use your F5-TTS checkpoint' in the README)."


class ClipNotCloned(UserWarning):
    """The model will not speak in the voice of the user's reference clip (:func:`clip_note`)."""


def clip_note(
    model, name: str, *, has_clip: bool, continue_reference: bool | None = None, editing: bool = False
) -> str | None:
    """The note for a user who gives ``model`` (called ``name``) a clip, or ``None`` when none is due.

    Args:
        model: A loaded model; only its file's metadata is read.
        name: How the user named the model (``builtin:student``, a file name).
        has_clip: Whether the user gave a reference clip of their own (not the model's bundled one).
        continue_reference: The effective choice when the user set it (``None``: the file's).
        editing: The clip is a recording to edit (``flowtts edit``): the new words are in the model's
            voice; ``continue_reference`` does not apply.

    Returns:
        One sentence or two, or ``None`` for a model whose file records neither fact (an F5-TTS
        checkpoint), or when no clip is given.

    Raises:
        ValueError: A recorded ``voices`` or ``continue_reference`` out of range, naming the key.
    """
    if not has_clip:
        return None
    voices = recorded_voices(model)
    if continue_reference is None:
        continue_reference = recorded_flag(model, CONTINUE_KEY)
    if voices == 1 and editing:
        return (
            f"{name} speaks in its one built-in voice: the new words will be in that voice, not your "
            "recording's. " + CLONE_HINT.replace("clone a voice", "edit in your own voice")
        )
    if editing:
        return None
    if voices == 1:
        return (
            f"{name} speaks in its one built-in voice; your clip sets only the speaking rate and loudness. "
            + CLONE_HINT
        )
    if continue_reference is False:
        return (
            f"{name} speaks the text without continuing your clip (its file records continue_reference: "
            "false), so the clip sets the speaking rate and loudness and may not set the voice; "
            "continue it with --continue-reference (continue_reference=True)."
        )
    return None


def warn_clip_note(model, name: str, **kwargs) -> str | None:
    """:func:`clip_note` (same keyword arguments), issued as a :class:`ClipNotCloned` warning; returns it."""
    note = clip_note(model, name, **kwargs)
    if note:
        warnings.warn(note, ClipNotCloned, stacklevel=3)
    return note
