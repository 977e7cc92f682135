"""Text to token ids: character vocabularies, UTF-8 bytes, pinyin (``zh`` extra)."""

from flowtts.text.tokenizers import (
    load_vocab,
    save_vocab,
    tokenize,
    tokens_to_tensor,
    unknown_characters,
)

__all__ = ["load_vocab", "save_vocab", "tokenize", "tokens_to_tensor", "unknown_characters"]
