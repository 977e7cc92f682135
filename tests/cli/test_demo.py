import os
import re

import pytest
import torch

import flowtts
from flowtts.cli.demo import check_cache_contract


def test_cache_contract_report_reflects_the_two_paths():
    grad_before = torch.is_grad_enabled()
    report = check_cache_contract(steps=3)
    assert torch.is_grad_enabled() == grad_before
    assert report["cache=True output has grad_fn"] is False
    assert report["cache=True leaves model in eval mode"] is True
    assert report["grad mode restored after cache=False"] is True
    assert report["cache=False keeps train mode"] is True
    assert report["max |cache=True - cache=False|"] < 1e-5
    reached, total = map(int, report["parameters reached by the gradient"].split("/"))
    assert reached == total > 100  # every parameter of the tiny model, each one of them


def _held_out_subset(folder, rows: int) -> str:
    """The built-in held-out prompt set cut to its first ``rows`` sentences (the same mels file, a shorter index)."""
    import shutil

    from flowtts.cli.demo import _assets

    source = _assets("prompts", "heldout")
    shutil.copytree(source, folder)
    with open(os.path.join(source, "index.jsonl"), encoding="utf-8") as f:
        lines = [line for line in f if line.strip()][:rows]
    with open(os.path.join(folder, "index.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(lines)
    return str(folder)


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_writes_its_files_and_report(tmp_path, monkeypatch, capsys):
    """``flowtts demo`` with its smallest settings (no distillation time: one step) and the held-out set cut to
    its first sentence (the rest is the demo as shipped): synthesis, WER, distillation and the report."""
    import soundfile as sf

    import flowtts.cli.demo as demo
    from flowtts.cli import main

    held = _held_out_subset(tmp_path / "heldout", 1)
    real_assets = demo._assets
    monkeypatch.setattr(demo, "_assets", lambda *p: held if p == ("prompts", "heldout") else real_assets(*p))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--distill-seconds", "0", "--seed", "1"]) == 0
    printed = capsys.readouterr().out

    # 1. the cache contract
    for line in ("grad_fn         False", "leaves model in eval mode  True", "restored after cache=False  True"):
        assert line in printed, line
    reached = re.search(r"parameters reached by the gradient\s+(\d+)/(\d+)", printed)
    assert reached and reached[1] == reached[2]
    assert float(re.search(r"max \|cache=True - cache=False\|\s+(\S+)", printed)[1]) < 1e-5
    # 2. one sentence from each model, as 24 kHz wavs of about its length, and their word error rates
    for name in ("teacher_32.wav", "student_4.wav"):
        wave, rate = sf.read(out / name)
        assert rate == 24_000 and 2.0 < len(wave) / rate < 6.0 and abs(wave).max() > 0.01, name
    wers = re.findall(r"(teacher@32|student@4)\s+WER (\S+) on 1 held-out sentences", printed)
    assert [w[0] for w in wers] == ["teacher@32", "student@4"] and all(0 <= float(w[1]) < 1 for w in wers), wers
    # 3. the distillation: one step, its run directory and a loadable student
    assert re.search(r"  1 steps in \d+ s, last loss \d", printed)
    assert {"student.safetensors", "last.pt", "distill_log.csv"} <= set(os.listdir(out / "distill"))
    assert flowtts.load(str(out / "distill" / "student.safetensors")).num_channels == 100
    # 4. the report, printed and written: the reference at distance 0, the shipped student closer to teacher@32
    #    than the teacher's own 4-step sampler, ratios that are those of the distances
    assert {"report.txt", "report.png", "teacher_32.wav", "student_4.wav", "distill"} <= set(os.listdir(out))
    report = (out / "report.txt").read_text(encoding="utf-8")
    assert report.strip() in printed and report.startswith("prompts: 1 unprompted prompts")
    table = re.findall(r"^(\S.*?)\s+(\d+)\s+([\d.]+)\s+[\d.]+$", report, re.M)
    rows = {system.strip(): (int(nfe), float(distance)) for system, nfe, distance in table}
    assert list(rows) == [
        "teacher@32 (reference)",
        "fresh student@4 (1 steps)",
        "teacher@4 (uniform, cfg 2)",
        "teacher@7 (EPSS, cfg 2)",
        "built-in student@4",
    ]
    assert rows["teacher@32 (reference)"] == (64, 0.0)
    assert [rows[k][0] for k in list(rows)[1:]] == [4, 8, 14, 4]
    assert 0 < rows["built-in student@4"][1] < rows["teacher@4 (uniform, cfg 2)"][1]
    ratio = float(re.search(r"student/naive=(\S+)", report)[1])
    fresh, naive = rows["fresh student@4 (1 steps)"][1], rows["teacher@4 (uniform, cfg 2)"][1]
    assert ratio == pytest.approx(fresh / naive, abs=2e-3)
    assert os.path.getsize(out / "report.png") > 10_000
