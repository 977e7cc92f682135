"""What a model reads for a text."""

from __future__ import annotations


def text_units(model, text: str):
    """What ``model`` reads for ``text``: pinyin units for Chinese text with a character vocabulary
    (:func:`flowtts.text.pinyin.vocab_units`), else the string (UTF-8 byte models)."""
    if model.vocab_char_map is None:
        return text
    from flowtts.text.pinyin import vocab_units

    return vocab_units(text)


def end_reference(text: str) -> str:
    """A reference transcript ending in a sentence end, as F5-TTS separates it from the new text.

    ``"Hello"`` -> ``"Hello. "``, ``"Hello."`` -> ``"Hello. "`` (surrounding space stripped first); text
    ending in ``"。"`` is kept.
    """
    text = text.strip()
    if text.endswith("。"):
        return text
    return text + " " if text.endswith(".") else text + ". "


def join_texts(reference, text):
    """What a model reads for ``text`` said after a clip of ``reference``: strings joined after
    :func:`end_reference`; pinyin unit lists joined with a space unit between them."""
    if isinstance(reference, str) and isinstance(text, str):
        return end_reference(reference) + text
    return [*reference, " ", *text]
