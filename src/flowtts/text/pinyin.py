"""Chinese characters to pinyin syllables for F5-TTS's pinyin vocabularies (needs the ``zh`` extra).

Mirrors F5-TTS's conversion: the text is segmented with jieba; ASCII runs are kept as characters
(separated by a space from a preceding syllable), Chinese characters become tone-numbered pinyin
syllables (``TONE3`` style, with tone sandhi) each preceded by a space, other characters are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

_PUNCTUATION = str.maketrans({";": ",", "\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


def _is_chinese(c: str) -> bool:
    return "\u3100" <= c <= "\u9fff"


def needs_pinyin(text: str) -> bool:
    """Whether ``text`` contains Chinese characters."""
    return any(_is_chinese(c) for c in text)


def _backends():
    try:
        import rjieba
        from pypinyin import Style, lazy_pinyin
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Chinese text needs pinyin conversion: install the zh extra (pip install 'flowtts[zh]')"
        ) from exc
    return rjieba, lambda s: lazy_pinyin(s, style=Style.TONE3, tone_sandhi=True)


def to_pinyin(texts: Sequence[str], polyphone: bool = True) -> list[list[str]]:
    """Convert each text to the unit list that a pinyin ``vocab.txt`` indexes."""
    rjieba, pinyin = _backends()
    out = []
    for text in texts:
        units: list[str] = []
        for seg in rjieba.cut(text.translate(_PUNCTUATION)):
            n_bytes = len(seg.encode("utf-8"))
            if n_bytes == len(seg):  # ASCII only
                if units and n_bytes > 1 and units[-1] not in " :'\"":
                    units.append(" ")
                units.extend(seg)
            elif polyphone and n_bytes == 3 * len(seg):  # East-Asian characters only
                syllables = pinyin(seg)
                for i, c in enumerate(seg):
                    if _is_chinese(c):
                        units.append(" ")
                    units.append(syllables[i])
            else:
                for c in seg:
                    if ord(c) < 256:
                        units.append(c)
                    elif _is_chinese(c):
                        units.append(" ")
                        units.extend(pinyin(c))
                    else:
                        units.append(c)
        out.append(units)
    return out


def vocab_units(text: str) -> str | list[str]:
    """What a character-vocabulary model reads for ``text``, as F5-TTS's inference and data preparation
    both make it: the pinyin units of a text with Chinese characters, any other text unchanged."""
    return to_pinyin([text])[0] if needs_pinyin(text) else text


_warned_no_jieba = False


def f5tts_units(text: str) -> list[str] | str:
    """What F5-TTS's inference feeds a vocabulary model for ``text``: :func:`to_pinyin` of every text, with
    or without Chinese (``infer/utils_infer.py:496`` in F5-TTS 1.1.22 converts whatever it reads).

    Without the ``zh`` extra, a text without Chinese gets only the punctuation mapping (jieba's extra spaces
    between word pieces, e.g. after a hyphen, are then missing, and a warning says so once).

    Raises:
        ImportError: Chinese text without the ``zh`` extra.
    """
    global _warned_no_jieba
    try:
        return to_pinyin([text])[0]
    except ImportError:
        if needs_pinyin(text):
            raise
    if not _warned_no_jieba:
        import logging

        logging.getLogger("flowtts").warning(
            "the F5-TTS pipeline segments text with jieba as F5-TTS does: pip install 'flowtts[zh]' "
            "(without it, spaces F5-TTS adds between word pieces are missing)"
        )
        _warned_no_jieba = True
    return text.translate(_PUNCTUATION)
