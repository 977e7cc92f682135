import pytest

from flowtts.eval import normalize_words, word_error_rate


def test_wer_counts_substitutions_insertions_deletions():
    assert word_error_rate(["the cat sat"], ["the cat sat"]) == 0
    assert word_error_rate(["the cat sat"], ["the bat sat"]) == pytest.approx(1 / 3)
    assert word_error_rate(["the cat sat"], ["the cat sat down"]) == pytest.approx(1 / 3)
    assert word_error_rate(["the cat sat", "a dog"], ["cat sat", ""]) == pytest.approx(3 / 5)
    assert normalize_words("Hello, World! It's me.") == ["hello", "world", "it's", "me"]
    with pytest.raises(ValueError):
        word_error_rate(["a"], [])
