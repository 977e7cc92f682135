"""``flowtts distill --method M``: the few-step methods from the command line."""

import json
import os

import pytest

from flowtts.checkpoints.loader import read_metadata
from flowtts.sampling.recipe import SamplingRecipe
from train.helpers import prepared_corpus, random_model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(str(tmp_path_factory.mktemp("distill_methods")), n=4)


@pytest.fixture
def teacher_file(corpus, tmp_path):
    import flowtts

    path = tmp_path / "teacher.safetensors"
    flowtts.save(random_model(corpus), path)
    return str(path)


def _args(teacher, corpus, out, *extra):
    return ["distill", "--teacher", teacher, "--data", corpus, "--out", str(out), "--teacher-steps", "8", "-q", *extra]


def test_progressive_from_the_command_line_trains_and_prints_the_report(corpus, tmp_path, teacher_file, capsys):
    from flowtts.cli import main

    extra = ["--method", "progressive", "--steps-per-round", "1", "--rounds-from", "4", "--student-steps", "1"]
    code = main(_args(teacher_file, corpus, tmp_path / "run", *extra, "--batch-size", "2", "--report-prompts", "2"))
    assert code == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert any(line.startswith("distilled (progressive) 2 steps") for line in lines), out
    assert lines[-1].startswith("student/naive=") and "student_nfe=1" in lines[-1], out
    files = set(os.listdir(tmp_path / "run"))
    assert {"student.safetensors", "student_2.safetensors", "student_1.safetensors", "report.txt"} <= files
    metadata = read_metadata(str(tmp_path / "run" / "student.safetensors"))
    recipe = SamplingRecipe.from_metadata(metadata)
    assert (recipe.steps, recipe.cfg_strength) == (1, 0.0)
    settings = json.loads(metadata["fewstep_config"])["settings"]
    assert (settings["start_steps"], settings["end_steps"], settings["steps_per_round"]) == (4, 1, 1)


@pytest.mark.parametrize(
    "method, flag, extra",
    [
        ("dmd", "--teacher-pool", ["--teacher-pool", "3"]),
        ("consistency", "--velocity-steps", ["--velocity-steps", "2"]),
        ("adversarial", "--grad-checkpoint", ["--grad-checkpoint"]),
    ],
)
def test_trajectory_only_options_are_refused_with_one_line(corpus, tmp_path, teacher_file, capsys, method, flag, extra):
    from flowtts.cli import main

    code = main(_args(teacher_file, corpus, tmp_path / "bad", "--method", method, *extra))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and f"--method {method}" in err[0], err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("method", ["dmd", "adversarial", "consistency", "progressive"])
def test_few_step_methods_refuse_an_epss_grid(corpus, tmp_path, teacher_file, capsys, method):
    from flowtts.cli import main

    code = main(_args(teacher_file, corpus, tmp_path / "bad", "--method", method, "--student-grid", "epss"))
    err = capsys.readouterr().err
    assert code == 2 and "uniform or sway grid" in err and "epss" in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("method", ["progressive", "consistency", "adversarial", "dmd"])
@pytest.mark.parametrize(("grid", "sway"), [("sway", -1.0), ("uniform", None)])
def test_the_student_grid_reaches_every_methods_recipe(method, grid, sway):
    """``--student-grid`` is what the student trains on and records, for every method (none ignores it)."""
    from flowtts.cli import build_parser
    from flowtts.cli.fewstep import method_config
    from flowtts.train.fewstep.run import FEWSTEP_LOOP

    args = build_parser().parse_args(
        ["distill", "--data", "d", "--out", "o", "--method", method, "--student-steps", "2", "--student-grid", grid]
    )
    args.seed = 0
    config = method_config(args, FEWSTEP_LOOP)
    recipe = config.recipe()
    assert (recipe.steps, recipe.sway_sampling_coef, recipe.cfg_strength) == (2, sway, 0.0)
    trained = {
        "progressive": lambda s: s.sway_coef,
        "consistency": lambda s: s.sway_coef,
        "adversarial": lambda s: s.student_recipe().sway_sampling_coef,
        "dmd": lambda s: s.sway_coef,
    }[method](config.settings)
    assert trained == sway


def test_the_ctc_weight_goes_to_dmd_and_is_refused_elsewhere():
    from flowtts.cli import build_parser
    from flowtts.cli.common import UserError
    from flowtts.cli.fewstep import method_config
    from flowtts.train.fewstep.run import FEWSTEP_LOOP

    def config(method):
        args = build_parser().parse_args(
            ["distill", "--data", "d", "--out", "o", "--method", method, "--ctc-weight", "0.2", "--recognizer", "r"]
        )
        args.seed = 0
        return method_config(args, FEWSTEP_LOOP)

    dmd = config("dmd")
    assert dmd.settings.ctc_weight == 0.2 and dmd.recognizer == "r"
    with pytest.raises(UserError, match="--ctc-weight"):
        config("progressive")
