import csv

import pytest
import torch

from flowtts.train.loop import LoopSettings, TrainingLoop, lr_factor

SETTINGS = LoopSettings(
    steps=8, lr=0.05, warmup=2, weight_decay=0.0, grad_clip=1.0, ema_decay=0.5, save_every=3, log_every=2
)


class Stop(Exception):
    pass


def _run(out_dir, kill_at=None, identity="a", max_seconds=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    data = torch.randn(8, 16, 3, generator=torch.Generator().manual_seed(1))
    position = {"seen": 0}

    def on_step(step, value):
        if step == kill_at:
            raise Stop

    loop = TrainingLoop(
        model,
        str(out_dir),
        SETTINGS,
        log_file="log.csv",
        log_columns=["step", "loss"],
        identity={"task": (identity, "task")},
        state=lambda: dict(position),
        progress=False,
        max_seconds=max_seconds,
        on_step=on_step,
    )
    if loop.resumed:
        position["seen"] = loop.resumed["seen"]
    with loop:
        while loop.running():
            x = data[loop.step]
            loss = (model(x) - x.sum(-1, keepdim=True)).pow(2).mean()
            loop.update(loss)
            position["seen"] += 1
            if loop.due_log():
                loop.log({"step": loop.step, "loss": f"{float(loss):.6f}"})
            loop.end_step(float(loss))
            loop.checkpoint_if_due()
    return model, loop, position


def test_a_killed_loop_resumes_to_the_uninterrupted_weights_ema_and_state(tmp_path):
    reference, ref_loop, ref_position = _run(tmp_path / "a")
    with pytest.raises(Stop):
        _run(tmp_path / "b", kill_at=5)  # killed after step 5; the last checkpoint is step 3
    resumed, loop, position = _run(tmp_path / "b")
    assert loop.step == 8 and loop.finished and position == ref_position == {"seen": 8}
    assert torch.equal(resumed.weight, reference.weight) and torch.equal(loop.ema.weight, ref_loop.ema.weight)
    for run in ("a", "b"):  # b logged step 4 before it was killed, and again after resuming from step 3: once
        with open(tmp_path / run / "log.csv") as f:
            assert [row["step"] for row in csv.DictReader(f)] == ["2", "4", "6", "8"], run
    assert abs(loop.lr - SETTINGS.lr * lr_factor(8, 2, 8)) < 1e-12


def test_a_state_of_another_run_is_refused_and_kept(tmp_path):
    _run(tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(ValueError, match="written for another task; use a new --out directory"):
        _run(tmp_path, identity="b")
    assert (tmp_path / "last.pt").read_bytes() == before


def test_the_time_limit_stops_after_one_step_with_a_checkpoint(tmp_path):
    _, loop, _ = _run(tmp_path, max_seconds=0.0)
    assert loop.step == 1 and not loop.finished
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 1


def test_a_stop_file_stops_the_run_with_a_checkpoint_and_is_then_removed(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "STOP").write_text("stop\n")
    _, loop, _ = _run(tmp_path)
    assert loop.step == 1 and torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 1
    assert not (tmp_path / "STOP").exists()
    _, loop, _ = _run(tmp_path)  # resumes normally
    assert loop.step == 8 and loop.finished


def test_loop_settings_are_checked_and_take_only_the_overrides_given():
    assert SETTINGS.with_overrides(steps=4, lr=None) == LoopSettings(**{**SETTINGS.__dict__, "steps": 4})
    for bad, match in (
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(save_every=2.5), "save_every must be an integer >= 1"),
        (dict(warmup=-1), "warmup must be an integer >= 0"),
        (dict(lr=-1e-3), "lr must be >= 0"),
        (dict(ema_decay=1.0), r"ema_decay must be in \[0, 1\)"),
    ):
        with pytest.raises(ValueError, match=match):
            SETTINGS.with_overrides(**bad)


def test_a_diverged_step_is_refused_and_leaves_the_weights(tmp_path):
    import pytest
    import torch

    from flowtts.train.loop import LoopSettings, TrainingLoop

    model = torch.nn.Linear(2, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = LoopSettings(
        steps=3, lr=0.1, warmup=0, weight_decay=0.0, grad_clip=1.0, ema_decay=0.0, save_every=1, log_every=1
    )
    loop = TrainingLoop(model, str(tmp_path), settings, log_file="log.csv", log_columns=["step"], progress=False)
    with loop, pytest.raises(ValueError, match="the run diverged at step 1: its gradient is nan"):
        loop.update(model(torch.ones(1, 2)).sum() * float("nan"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()) and loop.step == 0
