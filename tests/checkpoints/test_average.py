import json

import pytest
import torch

import flowtts
from conftest import randomise
from flowtts.checkpoints.average import average
from flowtts.checkpoints.loader import read_metadata
from flowtts.cli import main
from flowtts.model.build import build_model

GRID = json.dumps({"student_steps": 2, "teacher_steps": 8, "student_grid": "custom", "student_times": [0, 0.3, 1]})


def _model(seed, **metadata):
    model = randomise(build_model("tiny"), std=0.02, seed=seed)
    model.metadata = metadata
    return model


def test_the_average_is_the_weighted_mean_of_every_parameter():
    a, b = _model(1), _model(2)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    out = average([a, b], [1, 3])
    for key, value in out.state_dict().items():
        expected = 0.25 * a.state_dict()[key].double() + 0.75 * b.state_dict()[key].double()
        assert torch.allclose(value.double(), expected, atol=1e-7), key
    assert all(torch.equal(before[k], v) for k, v in a.state_dict().items())  # the inputs are untouched
    assert out is not a and torch.equal(
        average([a, a]).state_dict()["transformer.proj_out.weight"], a.state_dict()["transformer.proj_out.weight"]
    )


def test_models_that_cannot_be_averaged_are_refused():
    a = _model(1)
    with pytest.raises(ValueError, match="two or more models"):
        average([a])
    with pytest.raises(ValueError, match="one number per model"):
        average([a, _model(2)], [1])
    with pytest.raises(ValueError, match="weights must be positive"):
        average([a, _model(2)], [1, 0])
    with pytest.raises(ValueError, match="another configuration"):
        average([a, randomise(build_model("F5TTS_v1_Small"), std=0.02)])
    with pytest.raises(ValueError, match="another vocabulary"):  # same size, other characters
        average([build_model("tiny", {" ": 0, "a": 1}), build_model("tiny", {" ": 0, "b": 1})])
    other_grid = json.dumps({**json.loads(GRID), "student_times": [0, 0.5, 1]})
    with pytest.raises(ValueError, match="sampled otherwise"):
        average([_model(1, distill_config=GRID), _model(2, distill_config=other_grid)])


def test_average_command_writes_the_soup_with_the_students_settings(tmp_path, capsys):
    paths = []
    for seed in (1, 2):
        paths.append(str(tmp_path / f"s{seed}.safetensors"))
        flowtts.save(_model(seed), paths[-1], extra={"distill_config": GRID})
    out = str(tmp_path / "soup.safetensors")
    assert main(["average", *paths, "-o", out, "--weights", "1,3", "--dtype", "bfloat16"]) == 0
    soup = flowtts.load(out)
    a, b = flowtts.load(paths[0]), flowtts.load(paths[1])
    expected = (
        0.25 * a.state_dict()["transformer.proj_out.weight"] + 0.75 * b.state_dict()["transformer.proj_out.weight"]
    )
    assert torch.equal(soup.state_dict()["transformer.proj_out.weight"], expected.to(torch.bfloat16).float())
    meta = read_metadata(out)
    assert meta["distill_config"] == GRID and json.loads(meta["averaged_from"]) == [[paths[0], 1.0], [paths[1], 3.0]]
    capsys.readouterr()
    assert main(["average", *paths, "-o", out]) == 2
    assert "exists (--force overwrites it)" in capsys.readouterr().err
    assert main(["average", paths[0], "-o", str(tmp_path / "one.safetensors")]) == 2
    assert "two or more models" in capsys.readouterr().err
    assert not (tmp_path / "one.safetensors").exists()


def test_the_soup_of_a_fine_tuning_is_sampled_as_the_first_model_records(tmp_path):
    facts = {"speed": "0.9", "ref_silence": "0.5", "target_rms": "0.05"}
    paths = [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]
    flowtts.save(_model(1), paths[0], extra=facts)
    flowtts.save(_model(2), paths[1])
    out = str(tmp_path / "soup.safetensors")
    assert main(["average", *paths, "-o", out]) == 0
    meta = read_metadata(out)
    assert {k: meta.get(k) for k in facts} == facts
