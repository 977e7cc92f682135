import json

import pytest
import torch
from safetensors.torch import save_file

import flowtts
from conftest import randomise
from flowtts.checkpoints.inspect import format_facts, model_facts
from flowtts.checkpoints.loader import CheckpointError
from flowtts.cli import main
from flowtts.model.build import build_model

VOCAB = {c: i for i, c in enumerate(" abcdefgh")}


def test_facts_of_a_flowtts_file_and_of_an_official_one(tmp_path):
    model = randomise(build_model("tiny", VOCAB), std=0.05)
    path = tmp_path / "mine.safetensors"
    flowtts.save(model, path, dtype="bfloat16", extra={"step": 7})
    facts = model_facts(flowtts.load(path), path)
    assert facts["format"] == "flowtts" and facts["preset"] is None and facts["backbone"] == "DiT"
    assert facts["parameters"] == sum(p.numel() for p in model.parameters())
    assert facts["stored_dtypes"] == {"BF16": len(model.state_dict())}
    assert facts["vocabulary"] == {"size": 9, "kind": "characters"}
    assert facts["architecture"]["dim"] == 256 and facts["architecture"]["text_num_embeds"] == 9
    assert facts["sampling"] == {"steps": 32, "cfg_strength": 2.0, "sway_sampling_coef": -1.0, "t_grid": None}
    assert facts["metadata"]["step"] == "7"
    bare = tmp_path / "bare.safetensors"  # upstream's layout: weights only
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, bare)
    official = model_facts(flowtts.load(bare, vocab=VOCAB), bare)
    assert official["format"] == "F5-TTS checkpoint" and official["preset"] == "tiny"
    assert official["stored_dtypes"] == {"F32": len(model.state_dict())} and official["metadata"] == {}
    text = format_facts(facts)
    assert "backbone      DiT: dim=256" in text and "vocabulary    9 tokens (characters)" in text
    assert "sampling      32 steps, cfg 2, sway -1.0" in text


def test_info_command_describes_the_builtin_student(capsys):
    assert main(["info", "builtin:student", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["sampling"]["steps"] == 4 and facts["sampling"]["cfg_strength"] == 0.0
    assert len(facts["sampling"]["t_grid"]) == 5 and "distill_config" in facts["metadata"]
    assert main(["info"]) == 0  # the built-in teacher
    assert "sampling      32 steps, cfg 2" in capsys.readouterr().out


def test_a_resume_state_is_named_as_such(tmp_path, capsys):
    model = build_model("tiny")
    path = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "ema": model.state_dict(), "optimizer": {}, "step": 3}, path)
    with pytest.raises(CheckpointError, match="resume state; load the weights written beside it"):
        flowtts.load(path)
    assert main(["info", str(path)]) == 2
    assert "model.safetensors" in capsys.readouterr().err
