import importlib.util

import pytest
import torch

from flowtts.text import load_vocab, save_vocab, tokenize, tokens_to_tensor, unknown_characters
from upstream import load_upstream, needs_upstream


def test_vocab_round_trip_and_ids_are_line_indices(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text(" \na\nb\n,\n", encoding="utf-8")
    vocab = load_vocab(path)
    assert vocab == {" ": 0, "a": 1, "b": 2, ",": 3}
    save_vocab(vocab, tmp_path / "v2.txt")
    assert (tmp_path / "v2.txt").read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


def test_vocab_errors(tmp_path):
    (tmp_path / "dup.txt").write_text("a\nb\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'a' on lines 1 and 3"):
        load_vocab(tmp_path / "dup.txt")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="no tokens"):
        load_vocab(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError):
        load_vocab(tmp_path / "missing.txt")


def test_unknown_characters_map_to_zero_and_are_listed():
    vocab = {" ": 0, "a": 1, "b": 2}
    assert tokenize("ab?a", vocab) == [1, 2, 0, 1]
    assert unknown_characters(["ab?", "xa"], vocab) == ["?", "x"]
    assert tokenize(["a", "zhong1", "b"], {**vocab, "zhong1": 3}) == [1, 3, 2]


def test_bytes_without_vocab_and_padding():
    ids = tokens_to_tensor(["hi", "\u00e9"])
    assert ids.tolist() == [[104, 105], [0xC3, 0xA9]]
    ids = tokens_to_tensor(["abc", "a"], {"a": 0, "b": 1, "c": 2})
    assert ids.dtype == torch.long
    assert ids.tolist() == [[0, 1, 2], [0, -1, -1]]


def test_empty_text_is_rejected():
    with pytest.raises(ValueError, match=r"text\[1\] is empty"):
        tokens_to_tensor(["ok", ""])


@pytest.mark.skipif(importlib.util.find_spec("rjieba") is None, reason="zh extra not installed")
def test_pinyin_conversion_matches_upstream_units():
    from flowtts.text.pinyin import needs_pinyin, to_pinyin

    units = to_pinyin(["你好, world"])[0]
    assert units[:4] == [" ", "ni2", " ", "hao3"]  # tone sandhi: 3-3 -> 2-3
    assert "".join(units[4:]).strip() == ", world"
    assert needs_pinyin("你好") and not needs_pinyin("hello")


@needs_upstream(load_upstream() is not None and importlib.util.find_spec("rjieba") is not None)
def test_pinyin_conversion_equals_upstreams():
    from f5_tts.model.utils import convert_char_to_pinyin

    from flowtts.text.pinyin import to_pinyin

    texts = ["你好, world", "我们今天去北京;好吗", "F5-TTS 很好", "银行行长说：“好的！”"]
    for text in texts:
        assert to_pinyin([text]) == convert_char_to_pinyin([text]), text
    assert to_pinyin(texts) == convert_char_to_pinyin(texts)
