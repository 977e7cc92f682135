"""``flowtts demo``: the project's main job, run by the README's first command on the built-in models, offline.

1. The ``cache`` contract on a small random model: both paths agree, modes are restored, gradients flow.
2. One sentence in the built-in voice from the teacher at 32 guided steps and from the shipped
   student at 4 unguided steps (wav files, timings), and their word error rate on four held-out sentences
   (pocketsphinx on the audio of ``--vocoder``'s choice, by default the built-in neural vocoder, as
   ``flowtts eval``).
3. A fresh student distilled from the teacher for a few minutes on the built-in prompt set.
4. The distillation report on held-out sentences said unprompted (as the built-in files ask): distance to
   teacher@32 of both students and of the teacher's own few-step baselines, with network calls and time
   per utterance.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch

from flowtts.cli.common import UserError, add_sampling_flags, seed
from flowtts.model.build import build_model

SENTENCE = "The little dog found a red ball under the old bridge."


def _assets(*parts: str) -> str:
    from importlib.resources import files

    return str(files("flowtts").joinpath("assets", *parts))


def check_cache_contract(steps: int = 8, seed: int = 0) -> dict:
    """Sample a random ``tiny`` model with ``cache=True`` and ``cache=False`` and report what happened."""
    torch.manual_seed(seed)
    model = build_model("tiny")
    with torch.no_grad():  # F5-TTS zero-initialises the output: give the check a non-trivial network
        for p in model.parameters():
            p.normal_(0, 0.02)
    text = ["Flow matching turns noise into speech, one solver step at a time."]
    prompt = torch.randn(1, 80, model.num_channels)
    kwargs = dict(steps=steps, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=seed)
    report = {}
    model.train()
    start = time.perf_counter()
    fast, _ = model.sample(prompt, text, 250, **kwargs)
    report["cache=True seconds"] = round(time.perf_counter() - start, 3)
    report["cache=True output has grad_fn"] = fast.grad_fn is not None
    report["cache=True leaves model in eval mode"] = not model.training
    model.train()
    with torch.no_grad():  # cache=False turns gradients on for its own duration only
        model.sample(prompt, text, 250, cache=False, **kwargs)
        report["grad mode restored after cache=False"] = not torch.is_grad_enabled()
    report["cache=False keeps train mode"] = model.training
    model.eval()
    start = time.perf_counter()
    slow, _ = model.sample(prompt, text, 250, cache=False, **kwargs)
    report["cache=False forward seconds"] = round(time.perf_counter() - start, 3)
    report["max |cache=True - cache=False|"] = float((fast - slow.detach()).abs().max())
    slow[:, 80:].pow(2).mean().backward()
    reached = sum(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
    report["parameters reached by the gradient"] = f"{reached}/{len(list(model.parameters()))}"
    return report


def _print_report(title: str, report: dict) -> None:
    width = max(len(k) for k in report)
    print(title)
    for key, value in report.items():
        print(f"  {key.ljust(width)}  {value}")


def synthesize_both(teacher, student, out_dir: str, text: str = SENTENCE, seed: int = 0, vocoder: str = "auto") -> dict:
    """One sentence from teacher@32 (cfg 2) and the student (its own settings), as wav files, each vocoded
    by ``vocoder``'s choice for it (:func:`flowtts.audio.vocoders.choose_vocoder`)."""
    from flowtts.audio.io import read_audio, write_audio
    from flowtts.audio.vocoders import choose_vocoder, vocoder_name
    from flowtts.checkpoints.loader import builtin_reference
    from flowtts.synthesis import prepare_reference, recommended_options, synthesize

    ref_path, ref_text = builtin_reference()
    wave, _ = read_audio(ref_path, teacher.mel_spec.target_sample_rate)
    choice = vocoder
    report = {}
    systems = [("teacher@32", teacher, recommended_options(teacher, steps=32, cfg_strength=2.0))]
    if student is not None:
        options = recommended_options(student)
        systems.append((f"student@{options.steps}", student, options))
    for name, model, options in systems:
        reference = prepare_reference(model, wave, ref_text, options)
        vocoder = choose_vocoder(model, choice, name="--vocoder")
        start = time.perf_counter()
        (utt,) = synthesize(model, reference, [text], vocoder=vocoder, options=options, seeds=[seed], progress=False)
        seconds = time.perf_counter() - start
        path = os.path.join(out_dir, f"{name.replace('@', '_')}.wav")
        write_audio(path, utt.wave, utt.sample_rate)
        audio_seconds = utt.wave.numel() / utt.sample_rate
        used = vocoder_name(vocoder)
        report[name] = f"{path} ({audio_seconds:.1f} s of audio in {seconds:.1f} s, incl. the {used} vocoder)"
    return report


def intelligibility(models: dict, texts: list[str], seed: int = 0, vocoder: str = "auto") -> dict:
    """Word error rate (pocketsphinx on the audio of ``vocoder``'s choice, as ``flowtts eval``) of each model at
    its recommended settings on ``texts`` with the built-in reference clip (which the built-in files ask to use
    for rate and level only: they speak unprompted); ``{label: "WER ..."}``."""
    from flowtts.audio.io import read_audio
    from flowtts.audio.transcribe import PocketSphinx
    from flowtts.audio.vocoders import choose_vocoder
    from flowtts.checkpoints.loader import builtin_reference
    from flowtts.eval.report import score_model
    from flowtts.synthesis import prepare_reference, recommended_options

    asr = PocketSphinx()
    clip, clip_text = builtin_reference()
    lines = {}
    for label, model in models.items():
        options = recommended_options(model)
        reference = prepare_reference(model, read_audio(clip, model.mel_spec.target_sample_rate)[0], clip_text, options)
        score = score_model(
            model,
            texts,
            [reference] * len(texts),
            asr=asr,
            options=options,
            vocoder=choose_vocoder(model, vocoder, name="--vocoder"),
            seeds=[seed + i for i in range(len(texts))],
            label=label,
        )
        row = score.row()
        lines[f"{label}@{options.steps}"] = (
            f"WER {row['WER']} on {len(texts)} held-out sentences ({row['synthesis s']} s)"
        )
    return lines


def run_demo(
    out_dir: str = "flowtts_demo",
    distill_seconds: float = 150.0,
    threads: int | None = None,
    seed: int = 0,
    vocoder: str = "auto",
) -> dict:
    """Run the four parts above; files go to ``out_dir``; ``vocoder`` chooses the vocoder of part 2
    (:func:`flowtts.audio.vocoders.choose_vocoder`). Returns the distillation report rows."""
    import flowtts
    from flowtts.audio.vocoders import choose_vocoder, vocoder_name
    from flowtts.train.data import MelDataset
    from flowtts.train.distill import distill
    from flowtts.train.distill_config import DISTILL_LOOP, DistillConfig, student_recipe
    from flowtts.train.distill_report import evaluate, report
    from flowtts.train.prompts import fixed_prompts

    if threads:
        torch.set_num_threads(threads)
    os.makedirs(out_dir, exist_ok=True)
    _print_report("1. the cache contract (random tiny model, 8 steps, cfg 2):", check_cache_contract(seed=seed))

    teacher = flowtts.load("builtin")
    try:
        shipped = flowtts.load("builtin:student")
    except FileNotFoundError:
        shipped = None
    print(f"\n2. one sentence from the built-in models: {SENTENCE!r}")
    for name, line in synthesize_both(teacher, shipped, out_dir, seed=seed, vocoder=vocoder).items():
        print(f"  {name:<11} {line}")

    held = MelDataset(_assets("prompts", "heldout"))
    texts = [item["text"] for item in held.items[:4]]
    used = vocoder_name(choose_vocoder(teacher, vocoder, name="--vocoder"))
    print(f"\n   word error rate (pocketsphinx on {used} vocoder audio; the recordings score about 0.19):")
    try:
        models = {"teacher": teacher, **({"student": shipped} if shipped is not None else {})}
        for name, line in intelligibility(models, texts, seed=seed, vocoder=vocoder).items():
            print(f"  {name:<11} {line}")
    except ImportError as error:
        print(f"  skipped: {error}")

    config = DistillConfig(
        student=student_recipe(4, "sway"),
        batch_size=2,
        loop=DISTILL_LOOP.with_overrides(steps=60, lr=1e-4, warmup=5, save_every=1000, log_every=1),
        prompts="unprompted",  # the layout the built-in files ask inference for: each sentence with no audio prompt
        seed=seed,
    )
    run_dir = os.path.join(out_dir, "distill")
    print(
        f"\n3. distilling a fresh 4-step student from the teacher for up to {distill_seconds:.0f} s "
        f"(batch {config.batch_size}, teacher 32 steps with cfg 2, student 4 steps without guidance) ..."
    )
    data = MelDataset(_assets("prompts", "train"))
    fresh = copy.deepcopy(teacher)
    summary = distill(teacher, fresh, data, run_dir, config, progress=True, max_seconds=distill_seconds)
    print(f"  {summary['step']} steps in {summary['seconds']:.0f} s, last loss {summary['loss']:.4f}; run in {run_dir}")
    fresh = flowtts.load(os.path.join(run_dir, "student.safetensors"))

    prompts = fixed_prompts(held, list(range(len(held))), config.prompts, teacher.num_channels, config, seed=seed)
    extra = {}
    if shipped is not None:
        from flowtts.synthesis import recommended_options

        kw = recommended_options(shipped).solver_kwargs()
        extra[f"built-in student@{kw['steps']}"] = (shipped, kw)
    print(f"\n4. distance to teacher@32 on {len(held)} held-out sentences said unprompted (fixed noises):")
    rows, mels = evaluate(teacher, fresh, prompts, config, extra=extra)
    rows[1]["system"] = f"fresh student@4 ({summary['step']} steps)"
    source = f"{len(held)} unprompted prompts: each held-out sentence with no audio prompt (the built-in report set)"
    print(report(rows, mels, out_dir, source))
    written = sorted(name for name in os.listdir(out_dir) if not name.startswith("."))
    print(f"\nfiles in {out_dir}/: {', '.join(written)}")
    if "report.png" not in written:
        print("  (no report.png: the pictures need matplotlib, pip install 'flowtts[plot]')")
    return {"rows": rows, "distill": summary}


def _demo(args: argparse.Namespace) -> int:
    if args.distill_seconds < 0:
        raise UserError(f"--distill-seconds must be >= 0, got {args.distill_seconds}")
    run_demo(
        out_dir=args.out,
        distill_seconds=args.distill_seconds,
        seed=args.seed,
        threads=args.threads,
        vocoder=args.vocoder or "auto",
    )
    return 0


def add_demo(sub) -> None:
    """Register ``demo``."""
    demo = sub.add_parser(
        "demo", help="the main job on the built-in models: synthesise, distil a student for a few minutes, report"
    )
    demo.add_argument("--out", default="flowtts_demo", help="where the wavs, report and distillation run go")
    demo.add_argument(
        "--distill-seconds", type=float, default=150.0, help="most wall time of the fresh distillation (60 steps)"
    )
    demo.add_argument("--seed", type=seed, default=0)
    demo.add_argument("--threads", type=int, default=None)
    add_sampling_flags(demo, ("vocoder",))
    demo.set_defaults(func=_demo)
