"""Vocoder files: round trip, precision, the mel front end they record, foreign files."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flowtts.config import MelConfig
from flowtts.vocoder.files import check_fits, load_vocoder_file, save_vocoder
from vocoder.helpers import SMALL_MEL, small_vocoder


def test_round_trip_gives_the_same_waves_and_facts(tmp_path):
    vocoder = small_vocoder().eval()
    path = str(tmp_path / "v.safetensors")
    save_vocoder(vocoder, path, extra={"trained_on": "here", "steps": 7})
    loaded = load_vocoder_file(path)
    mel = torch.randn(2, 12, 9) - 2
    with torch.no_grad():
        assert torch.equal(loaded(mel), vocoder(mel))
    assert loaded.config == vocoder.config
    assert loaded.metadata == {"trained_on": "here", "steps": "7"}


def test_half_precision_files_read_back_as_float32(tmp_path):
    vocoder = small_vocoder().eval()
    path = str(tmp_path / "v.safetensors")
    save_vocoder(vocoder, path, dtype=torch.float16)
    loaded = load_vocoder_file(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for (name, a), b in zip(vocoder.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a.half().float(), b), name


def test_a_vocoder_for_another_mel_front_end_is_refused_naming_both():
    vocoder = small_vocoder()
    check_fits(vocoder, SMALL_MEL)  # its own: accepted
    other = dataclasses.replace(SMALL_MEL, hop_length=32)
    with pytest.raises(ValueError) as error:
        check_fits(vocoder, other, "the teacher")
    message = str(error.value)
    assert "'hop_length': 16" in message and "'hop_length': 32" in message and "the teacher" in message


def test_the_builtin_vocoder_fits_the_builtin_models():
    import flowtts
    from flowtts.model.mel import mel_config_of

    vocoder = load_vocoder_file("builtin")
    for spec in ("builtin", "builtin:student"):
        check_fits(vocoder, mel_config_of(flowtts.load(spec)))
    assert vocoder.config.mel == MelConfig()


def test_foreign_and_missing_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError, match="vocoder file not found"):
        load_vocoder_file(str(tmp_path / "none.safetensors"))
    other = str(tmp_path / "other.safetensors")
    save_file({"x": torch.zeros(2)}, other, metadata={"format": "flowtts"})
    with pytest.raises(ValueError, match="is not a flowtts vocoder file"):
        load_vocoder_file(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_vocoder_file(str(junk))


def test_tensors_that_do_not_fit_the_config_are_refused(tmp_path):
    vocoder = small_vocoder()
    path = str(tmp_path / "v.safetensors")
    save_vocoder(vocoder, path)
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["head.weight"] = tensors["head.weight"][:-1]
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(ValueError, match="do not fit its vocoder config"):
        load_vocoder_file(path)


@pytest.mark.parametrize(
    "config",
    [None, "{", "[1]", '{"dim": 16, "mel": {"n_mel_channels": -3}}', '{"mel": {"bogus": 1}}'],
    ids=["missing", "torn", "not-an-object", "impossible-mel", "unknown-mel-key"],
)
def test_a_missing_or_invalid_config_is_refused_naming_the_file(tmp_path, config):
    from safetensors.torch import save_file

    path = str(tmp_path / "v.safetensors")
    metadata = {"format": "flowtts-vocoder"} | ({} if config is None else {"config": config})
    save_file({"x": torch.zeros(2)}, path, metadata=metadata)
    with pytest.raises(ValueError, match="v.safetensors: its vocoder config is missing or invalid"):
        load_vocoder_file(path)
