import pytest
import torch

import flowtts
from conftest import randomise
from flowtts.model.build import EMBEDDING_KEY, build_model, extend_vocab

VOCAB = {c: i for i, c in enumerate(" abcdefgh")}


def _model():
    return randomise(build_model("tiny", VOCAB), std=0.05).eval()


def _out(model, text, seed=1):
    cond = torch.randn(1, 20, 100, generator=torch.Generator().manual_seed(0))
    out, _ = model.sample(cond, [text], 40, steps=2, cfg_strength=2.0, seed=seed)
    return out


def test_extending_keeps_every_old_id_and_output_and_appends_new_rows():
    model = _model()
    grown = extend_vocab(model, ["x", "zhong1"], seed=3)
    assert grown.vocab_char_map == {**VOCAB, "x": 9, "zhong1": 10}
    assert grown.config.text_num_embeds == 11 and model.vocab_char_map == VOCAB  # the input is untouched
    old, new = model.state_dict(), grown.state_dict()
    assert new.keys() == old.keys()
    for key in old:
        if key != EMBEDDING_KEY:
            assert torch.equal(new[key], old[key]), key
    assert torch.equal(new[EMBEDDING_KEY][:10], old[EMBEDDING_KEY])  # filler row + 9 tokens
    rows = new[EMBEDDING_KEY][10:]
    assert rows.shape == (2, old[EMBEDDING_KEY].shape[1])
    assert torch.equal(rows, extend_vocab(model, ["x", "zhong1"], seed=3).state_dict()[EMBEDDING_KEY][10:])
    assert not torch.equal(rows, extend_vocab(model, ["x", "zhong1"], seed=4).state_dict()[EMBEDDING_KEY][10:])
    assert 0.5 < float(rows.std()) < 1.5  # N(0, 1) rows, as nn.Embedding's own init

    assert torch.equal(_out(grown, "abc fed"), _out(model, "abc fed"))  # old text reads the same weights
    # A new token has its own row now; before, it was unknown and read as id 0.
    assert not torch.equal(_out(grown, ["a", "zhong1", "b"]), _out(model, ["a", "zhong1", "b"]))


def test_an_extended_model_saves_and_loads_with_its_vocabulary(tmp_path):
    grown = extend_vocab(_model(), ["x"])
    flowtts.save(grown, tmp_path / "m.safetensors")
    back = flowtts.load(tmp_path / "m.safetensors")
    assert back.vocab_char_map == grown.vocab_char_map
    assert torch.equal(back.state_dict()[EMBEDDING_KEY], grown.state_dict()[EMBEDDING_KEY])


@pytest.mark.parametrize(
    "tokens, message",
    [
        ([], "nothing to add"),
        (["x", "a", "b"], "already in the vocabulary: 'a' 'b'"),
        (["x", "x"], "must not repeat"),
        (["x", ""], "non-empty strings without newlines"),
        (["x\ny"], "non-empty strings without newlines"),
    ],
)
def test_bad_tokens_are_refused(tokens, message):
    with pytest.raises(ValueError) as info:
        extend_vocab(_model(), tokens)
    assert message in str(info.value)


def test_a_byte_model_has_no_vocabulary_to_extend():
    with pytest.raises(ValueError, match="UTF-8 byte model"):
        extend_vocab(build_model("tiny"), ["x"])
