import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from flowtts.text import load_vocab
from flowtts.train.data import MelDataset, collate, prepare_dataset
from flowtts.train.trainer import TRAIN_LOOP, TrainConfig, read_log, train
from train.helpers import split_loop, tiny_model, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    meta = write_corpus(str(root), n=12)
    prepare_dataset(meta, None, str(root / "prepared"), progress=False)
    return str(root / "prepared")


def _config(**kw):
    base = dict(
        steps=12,
        lr=3e-3,
        warmup=2,
        batch_frames=400,
        max_samples=4,
        save_every=4,
        log_every=1,
        eval_every=4,
        ema_decay=0.9,
        seed=3,
    )
    return TrainConfig(**split_loop({**base, **kw}, TRAIN_LOOP))


def _fixed_loss(model, ds):
    mels, lens, texts = collate([ds[i] for i in range(len(ds))])
    g = torch.Generator().manual_seed(0)
    draws = model.draw(lens, mels.shape[1], g)
    draws.drop_audio_cond = draws.drop_text = False
    with torch.no_grad():
        return model(mels, texts, lens=lens, draws=draws)[0].item()


@pytest.mark.parametrize("backbone", ["DiT", "UNetT"])
def test_training_lowers_the_loss_and_writes_its_files(corpus, tmp_path, backbone):
    ds = MelDataset(corpus)
    model = tiny_model(load_vocab(ds.vocab_path()), backbone=backbone)
    before = _fixed_loss(model, ds)
    summary = train(model, ds, str(tmp_path), _config(steps=40, save_every=20), held_out=ds, progress=False)
    after = _fixed_loss(model, ds)
    assert summary["step"] == 40 and summary["finished"]
    assert after < 0.7 * before, (before, after)
    rows = read_log(str(tmp_path))
    assert len(rows) == 40 and rows[-1]["val_loss"] and rows[-1]["wrong_text_loss"]
    assert {"last.pt", "model.safetensors", "train_log.csv", "loss.png"} <= set(os.listdir(tmp_path))
    import flowtts

    ema = flowtts.load(str(tmp_path / "model.safetensors"))
    assert ema.vocab_char_map == model.vocab_char_map and ema.metadata["step"] == "40"
    assert type(ema.transformer) is type(model.transformer) and ema.config.backbone == backbone


def test_a_fine_tuning_records_what_its_start_says_about_the_data(corpus, tmp_path):
    import flowtts
    from flowtts.synthesis import recommended_options

    ds = MelDataset(corpus)
    model = tiny_model(load_vocab(ds.vocab_path()))
    model.metadata = {"speed": "0.9", "ref_silence": "0.5", "target_rms": "0.05", "step": "999"}
    train(model, ds, str(tmp_path), _config(steps=4, snapshot_every=2), progress=False)
    for name in ("model.safetensors", "model_2.safetensors"):
        tuned = flowtts.load(str(tmp_path / name))
        options = recommended_options(tuned)
        assert (options.speed, options.ref_silence, options.target_rms) == pytest.approx((0.9, 0.5, 0.05)), name
        assert tuned.metadata["step"] in ("4", "2")


@pytest.mark.parametrize(("pair_fraction", "pair_gap"), [(0.0, None), (0.5, None), (0.5, (0.05, 0.3))])
def test_kill_and_resume_gives_the_uninterrupted_parameters(corpus, tmp_path, pair_fraction, pair_gap):
    ds = MelDataset(corpus)
    vocab = load_vocab(ds.vocab_path())
    reference = tiny_model(vocab)
    config = _config(
        pair_fraction=pair_fraction,
        pair_gap=pair_gap,
        pair_rms=0.1 if pair_gap else 0.0,
        batch_frames=800 if pair_fraction else 400,
    )
    train(reference, ds, str(tmp_path / "a"), config, progress=False)

    class Killed(Exception):
        pass

    def kill(step, loss):
        if step == 6:
            raise Killed

    first = tiny_model(vocab)
    with pytest.raises(Killed):
        train(first, ds, str(tmp_path / "b"), config, progress=False, on_step=kill)
    resumed = tiny_model(vocab, seed=99)  # fresh process: different init, everything comes from last.pt
    summary = train(resumed, ds, str(tmp_path / "b"), config, progress=False)
    assert summary["step"] == 12
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_pair_settings_are_checked_when_the_run_is_configured():
    with pytest.raises(ValueError, match="pair_gap"):
        _config(pair_gap=(0.4, 0.1))
    with pytest.raises(ValueError, match="pair_gap / pair_rms"):
        _config(pair_gap=(0.1, 0.2), pair_rms=-0.1)
    with pytest.raises(ValueError, match=r"ctc_min_time must be in \[0, 1\), got 1.0"):
        _config(ctc_min_time=1.0)  # the checks after the pair settings still run
    assert _config(pair_gap=[0.1, 0.2]).pair_layout().gap == (0.1, 0.2)


def test_snapshots_and_samples_leave_training_unchanged(corpus, tmp_path):
    import soundfile as sf

    import flowtts
    from flowtts.train.snapshots import log_sample

    ds = MelDataset(corpus)
    vocab = load_vocab(ds.vocab_path())
    plain = tiny_model(vocab)
    train(plain, ds, str(tmp_path / "plain"), _config(), progress=False)
    logged = tiny_model(vocab)
    config = _config(snapshot_every=4, keep_snapshots=2, log_samples=True, save_every=6)
    train(logged, ds, str(tmp_path / "run"), config, held_out=ds, progress=False)
    for (name, a), b in zip(plain.state_dict().items(), logged.state_dict().values()):
        assert torch.equal(a, b), name  # no random draw of the run was disturbed
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("model_*.safetensors")) == ["model_12.safetensors", "model_8.safetensors"]
    last, final = flowtts.load(str(run / "model_12.safetensors")), flowtts.load(str(run / "model.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(last.state_dict().values(), final.state_dict().values()))
    assert last.metadata["step"] == "12"
    names = {p.name for p in (run / "samples").iterdir()}
    assert {
        "ref.wav",
        "step_6_gen.wav",
        "step_12_gen.wav",
        "step_12_gen.png",
    } <= names and "step_4_gen.wav" not in names
    # The step-12 sample is upstream's recipe (the utterance as prompt, its text twice) on the step-12 EMA.
    mel, text = ds[0]
    n = mel.shape[0]
    expected, _ = last.sample(
        mel[None], [f"{text} {text}"], 2 * n, steps=32, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=3
    )
    again = log_sample(last, mel, text, str(tmp_path / "again"), 12, seed=3)
    assert torch.equal(again["mel"], expected[0, n:])
    wave, rate = sf.read(run / "samples" / "step_12_gen.wav")
    assert rate == 24_000 and len(wave) == (n - 1) * last.mel_spec.hop_length
    assert np.array_equal(wave, sf.read(again["gen"])[0])
    assert not np.array_equal(wave, sf.read(run / "samples" / "step_6_gen.wav")[0])  # the model moved
    assert np.abs(wave).max() > 1e-3


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(snapshot_every=-1), "snapshot_every must be >= 0"),
        (dict(keep_snapshots=0), "keep_snapshots must be -1"),
        (dict(keep_snapshots=-2), "keep_snapshots must be -1"),
    ],
)
def test_bad_snapshot_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        _config(**bad)


def test_architecture_mismatch_on_resume_is_refused(corpus, tmp_path):
    ds = MelDataset(corpus)
    vocab = load_vocab(ds.vocab_path())
    train(tiny_model(vocab), ds, str(tmp_path), _config(steps=2, save_every=2), progress=False)
    import dataclasses

    from flowtts.model.build import build_model
    from train.helpers import TINY_TRAIN

    other = build_model(dataclasses.replace(TINY_TRAIN, depth=3), vocab)
    with pytest.raises(ValueError, match="another architecture"):
        train(other, ds, str(tmp_path), _config(steps=4), progress=False)


def test_gradient_accumulation_steps_on_the_mean_of_its_micro_batch_gradients(corpus, tmp_path):
    import copy

    from flowtts.train.data import frame_batches
    from flowtts.train.loop import load_checkpoint
    from flowtts.train.trainer import _step_generator

    ds = MelDataset(corpus)
    model = tiny_model(load_vocab(ds.vocab_path()))
    start = copy.deepcopy(model)
    config = _config(steps=1, grad_accum=3, grad_clip=1e9, save_every=1)
    train(model, ds, str(tmp_path), config, progress=False)
    optimizer = load_checkpoint(str(tmp_path / "last.pt"))["optimizer"]["state"]
    used = [optimizer[i]["exp_avg"] / 0.1 for i in range(len(optimizer))]  # Adam's first moment after one step

    # Independent reference: the first three frame batches of epoch 0, each with its own draws, their mean
    # losses averaged, one backward.
    batches = frame_batches(ds.frames, config.batch_frames, config.max_samples, config.seed, 0)
    assert len(batches) >= 3
    start.train()
    total = 0.0
    for micro, indices in enumerate(batches[:3]):
        mels, lens, texts = collate([ds[i] for i in indices])
        draws = start.draw(lens, mels.shape[1], _step_generator(config.seed, micro, "cpu"))
        loss_sum, _, _ = start(mels, texts, lens=lens, draws=draws, reduction="sum")
        total = total + loss_sum / (int(draws.span.sum()) * start.num_channels)
        if micro == 0:
            first = torch.autograd.grad(loss_sum, [p for p in start.parameters()], retain_graph=True, allow_unused=True)
    (total / 3).backward()
    params = [p for p in start.parameters() if p.requires_grad]
    assert len(params) == len(used)
    largest = max(float(p.grad.abs().max()) for p in params)
    for p, g in zip(params, used):
        torch.testing.assert_close(g, p.grad, atol=1e-6 * largest, rtol=1e-4)
    # and it is not just the first micro-batch's gradient
    assert any(f is not None and not torch.allclose(f, p.grad, rtol=0.05) for f, p in zip(first, params))


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from flowtts.text import load_vocab
from flowtts.train.data import MelDataset
from flowtts.train.trainer import TRAIN_LOOP, TrainConfig, train
from train.helpers import tiny_model
import torch.distributed as dist
ds = MelDataset({corpus!r})
model = tiny_model(load_vocab(ds.vocab_path()))
loop = TRAIN_LOOP.with_overrides(steps=6, lr=3e-3, warmup=2, save_every=6, log_every=1)
cfg = TrainConfig(loop=loop, batch_frames=400, max_samples=4, seed=3, isolate_batch=True, grad_accum={accum})
train(model, ds, {out!r}, cfg, progress=False)
rank = dist.get_rank() if dist.is_initialized() else 0
torch.save(model.state_dict(), {out!r} + f"/params{{rank}}.pt")
"""


@pytest.mark.parametrize("accum", [1, 2])
def test_two_process_torchrun_matches_one_process(corpus, tmp_path, accum):
    tests = os.path.dirname(os.path.dirname(__file__))
    results = {}
    for n in (1, 2):
        out = str(tmp_path / f"n{n}")
        os.makedirs(out)
        script = tmp_path / f"run{n}.py"
        script.write_text(DDP_SCRIPT.format(tests=tests, corpus=corpus, out=out, accum=accum))
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--standalone"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd + [str(script)], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[n] = [torch.load(f"{out}/params{r}.pt", weights_only=True) for r in range(n)]
    rank0, rank1 = results[2]
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
        assert torch.allclose(rank0[name], results[1][0][name], atol=1e-5, rtol=1e-4), name
    assert len(read_log(str(tmp_path / "n2"))) == 6  # rank 0 alone wrote the log


def test_the_ctc_term_reads_the_one_step_estimate_and_lowers_its_loss(corpus, tmp_path):
    from flowtts.config import MelConfig
    from flowtts.eval.recognizer import CTCRecognizer, RecognizerConfig, save_recognizer
    from flowtts.train.trainer import ctc_term

    ds = MelDataset(corpus)
    torch.manual_seed(0)
    recognizer = CTCRecognizer(RecognizerConfig(channels=16, hidden=8, gru_layers=1, dropout=0.0, mel=MelConfig()))
    recognizer.eval().requires_grad_(False)
    path = str(tmp_path / "rec.safetensors")
    save_recognizer(recognizer, path)
    model = tiny_model(load_vocab(ds.vocab_path()))
    mels, lens, texts = collate([ds[i] for i in range(4)])
    draws = model.draw(lens, mels.shape[1], torch.Generator().manual_seed(1))
    draws.drop_text = False
    draws.time = torch.tensor([0.2, 0.6, 0.9, 0.7])
    pred = torch.randn(mels.shape, generator=torch.Generator().manual_seed(2))
    got, rows = ctc_term(recognizer, mels, lens, texts, draws, pred, min_time=0.5)
    assert rows == 3  # the row at t = 0.2 is left out
    expected = 0.0
    for r in (1, 2, 3):  # independently: the estimate x_t + (1 - t) v inside the span, the recording outside
        t, n = float(draws.time[r]), int(lens[r])
        x_t = (1 - t) * draws.noise[r, :n] + t * mels[r, :n]
        estimate = torch.where(draws.span[r, :n, None], x_t + (1 - t) * pred[r, :n], mels[r, :n])
        expected += float(recognizer.ctc_loss(estimate[None], None, [texts[r]])[0][0])
    assert abs(float(got) - expected) < 1e-4 * max(1.0, expected)
    draws.drop_text = True
    assert ctc_term(recognizer, mels, lens, texts, draws, pred, min_time=0.5)[1] == 0

    def ctc_now(m):  # the term on fixed draws with the model's own prediction
        d = m.draw(lens, mels.shape[1], torch.Generator().manual_seed(4))
        d.drop_text = d.drop_audio_cond = False
        d.time = torch.full((4,), 0.8)
        with torch.no_grad():
            pred = m(mels, texts, lens=lens, draws=d)[2]
        return float(ctc_term(recognizer, mels, lens, texts, d, pred, 0.5)[0])

    plain, weighted = tiny_model(load_vocab(ds.vocab_path())), tiny_model(load_vocab(ds.vocab_path()))
    train(plain, ds, str(tmp_path / "plain"), _config(steps=15), progress=False)
    train(weighted, ds, str(tmp_path / "ctc"), _config(steps=15, ctc_weight=1.0, recognizer=path), progress=False)
    assert ctc_now(weighted) < ctc_now(plain) - 0.05
    assert read_log(str(tmp_path / "ctc"))[-1]["ctc_loss"] and not read_log(str(tmp_path / "plain"))[-1]["ctc_loss"]
