"""Seed choice and multi-voice joining, the one implementation the CLI, the app and the API share."""

import pytest
import torch

from flowtts.synthesis.seeds import SEED_RANGE, choose_seed
from flowtts.synthesis.voices import piece_seeds, speak_pieces


def test_a_seed_is_kept_and_none_or_a_negative_one_is_drawn():
    assert choose_seed(7) == 7 and choose_seed(0) == 0
    assert all(0 <= choose_seed(value) < SEED_RANGE for value in (None, -1, -5))
    assert choose_seed(3.0) == 3 and choose_seed(2**40) == 2**40  # a page's number field sends floats


@pytest.mark.parametrize("seed", [3.7, float("nan"), float("inf"), "x", True, 2**63, 2**70])
def test_a_seed_that_is_not_a_whole_number_in_range_is_refused_not_truncated(seed):
    with pytest.raises(ValueError, match="seed must"):
        choose_seed(seed)


def test_piece_k_uses_seed_plus_k_unless_it_has_its_own():
    assert piece_seeds(5, 3) == [5, 6, 7]
    assert piece_seeds(None, 2) == [None, None]
    assert piece_seeds(5, 3, {1: 40}) == [5, 40, 7]


def test_speak_pieces_refuses_nothing_to_say_and_a_wrong_seed_count():
    with pytest.raises(ValueError, match="nothing to say"):
        speak_pieces(None, [], {}, {}, vocoder=None, seeds=[])
    with pytest.raises(ValueError, match="2 seeds for 1 pieces"):
        speak_pieces(None, [("main", "Hi.")], {}, {}, vocoder=None, seeds=[1, 2])


def test_speak_pieces_concatenates_the_pieces_waves_and_mels(monkeypatch):
    from flowtts.synthesis import speech, voices

    def fake(model, reference, texts, *, vocoder, options, seeds, progress):
        n = len(texts[0])
        return [speech.Utterance(texts[0], torch.full((n,), float(seeds[0])), torch.zeros(2, n), seeds[0], 10)]

    monkeypatch.setattr(voices, "synthesize", fake)
    said = []
    joined = speak_pieces(
        None,
        [("main", "ab"), ("town", "cde")],
        {"main": None, "town": None},
        {"main": None, "town": None},
        vocoder=None,
        seeds=[3, 9],
        on_piece=lambda voice, text, utterance: said.append((voice, text, utterance.seed)),
    )
    assert joined.wave.tolist() == [3.0, 3.0, 9.0, 9.0, 9.0] and joined.mel.shape == (2, 5)
    assert joined.seed == 3 and joined.text == "ab cde" and said == [("main", "ab", 3), ("town", "cde", 9)]
