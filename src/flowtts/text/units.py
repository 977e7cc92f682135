"""What a model reads for a text."""

from __future__ import annotations


def text_units(model, text: str):
    """What ``model`` reads for ``text``: pinyin units for Chinese text with a character vocabulary
    (:func:`flowtts.text.pinyin.vocab_units`), else the string (UTF-8 byte models)."""
    if model.vocab_char_map is None:
        return text
    from flowtts.text.pinyin import vocab_units

    return vocab_units(text)
