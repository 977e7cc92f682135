"""Few-step students against the teacher and its few-step baselines, on one held-out report split (issue #33).

Usage: python benchmarks/few_step.py --report REPORT/metadata.csv \
           --student progressive=RUN/student.safetensors [--student NAME=SPEC ...] [--calls 1 2 4] [--out DIR]

Every system speaks the same report sentences in the built-in voice, sentence ``i`` from seed ``seed + i``
(so systems with the same duration start from the same noise), and is rendered with Griffin-Lim. Rows:
the recordings (their mels through the same Griffin-Lim round trip), the built-in teacher at 32 sway steps
with guidance 2 (64 network calls), at 4 and 2 sway steps and 1 step, at 7 EPSS steps (F5-TTS's fast
grid, with sway), ``builtin:student`` with its own recipe, and each ``--student`` with guidance 0 at each
``--calls`` step count on the grid it records (a custom grid of another length falls back to uniform).

Columns: NFE (network calls per utterance); WER (pocketsphinx, with its standard error over sentences
and the WER of each half of the split); SIM (resemblyzer cosine to the reference clip, as
flowtts.eval.report computes it); CTC WER (the built-in CTC recogniser reading the mels: it is no judge
for students trained against that recogniser); DNSMOS P.808 and OVRL (speechmos; "n/a" without it); FD
(Fréchet distance of log-mel + delta frames, re-analysed from each vocoded wave at RMS 0.1, to the
recordings'); variety (spread across seeds, flowtts.eval.variety) and its ratio to teacher@32's; dist@32
(mean squared log-mel difference to teacher@32 for the same noise); s/utt (median synthesis seconds per
utterance, vocoder included, scoring excluded).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch

import flowtts
from _common import table
from flowtts.audio.io import read_audio
from flowtts.audio.transcribe import PocketSphinx
from flowtts.audio.vocoders import GriffinLim
from flowtts.eval.dnsmos import dnsmos, dnsmos_available, limit_threads
from flowtts.eval.frechet import fit_gaussian, frame_features, frechet_distance
from flowtts.eval.recognizer import load_recognizer
from flowtts.eval.report import score_model, score_recordings, speaker_similarity_or_none
from flowtts.eval.variety import mel_distance, variety
from flowtts.eval.wer import edit_distance, normalize_words, word_error_rate
from flowtts.sampling.recipe import SamplingRecipe
from flowtts.synthesis import prepare_reference, recommended_options, synthesize
from flowtts.train.data import read_metadata

RATE = 24_000
TEACHER = "builtin"
REFERENCE_ROW = "teacher@32 cfg2"
RECORDINGS_ROW = "recordings (GL round trip)"
ANALYSIS_RMS = 0.1  # each vocoded wave is brought to this RMS before its frames are re-analysed for FD
VARIETY_SEED_STRIDE = 100_003  # seed j of sentence i in the variety runs: seed + i + j * stride


@dataclass
class System:
    """One row to sample: a model spec and the recipe it is sampled with."""

    label: str
    spec: str
    recipe: SamplingRecipe
    student: str | None = None  # the --student name, for the mel figure
    calls: int | None = None


@dataclass
class Result:
    """What one row measured, per sentence and in total."""

    label: str
    nfe: int | None
    texts: list[str]
    transcripts: list[str] = field(default_factory=list)
    ctc_transcripts: list[str] = field(default_factory=list)
    sims: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    mels: list[torch.Tensor] = field(default_factory=list)  # generated log-mels (d, n)
    waves: list[torch.Tensor] = field(default_factory=list)
    p808: list[float] = field(default_factory=list)
    ovrl: list[float] = field(default_factory=list)
    variety: float | None = None
    frechet: float | None = None
    distance: float | None = None
    recipe: SamplingRecipe | None = None


# ---------------------------------------------------------------------------------------------- arguments


def parse_student(value: str) -> tuple[str, str, int | None]:
    """``NAME=SPEC`` -> ``(name, spec, None)`` (a row per ``--calls``), ``NAME@K=SPEC`` -> ``(name, spec, K)``
    (one row at ``K`` calls, e.g. a progressive round's student); a spec is a path or a ``flowtts.load``
    spec such as ``builtin:student``."""
    name, sep, spec = value.partition("=")
    name, at, calls = name.partition("@")
    if not sep or not name or not spec or (at and not calls.isdigit()):
        raise argparse.ArgumentTypeError(f"--student must be NAME=PATH or NAME@CALLS=PATH, got {value!r}")
    return name, spec, int(calls) if at else None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", required=True, help="metadata csv (audio_file|text) of the report split")
    parser.add_argument("--n", type=int, default=40, help="sentences: the first n rows (all when fewer)")
    parser.add_argument("--seed", type=int, default=0, help="sentence i is sampled from seed + i")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--student", type=parse_student, action="append", default=[], help="NAME=PATH, repeatable")
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4], help="network calls per student row")
    parser.add_argument("--skip-baselines", action="store_true", help="only the students and the recordings")
    parser.add_argument("--variety-texts", type=int, default=8)
    parser.add_argument("--variety-seeds", type=int, default=4)
    parser.add_argument("--out", help="folder for few_step.txt, few_step.json and few_step_mels.png")
    args = parser.parse_args(argv)
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the first flag out of range."""
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if any(k < 1 for k in args.calls):
        raise ValueError(f"--calls must be integers >= 1, got {args.calls}")
    if args.variety_texts < 0:
        raise ValueError(f"--variety-texts must be >= 0, got {args.variety_texts}")
    if args.variety_seeds < 2 and args.variety_texts > 0:
        raise ValueError(f"--variety-seeds must be >= 2 (a spread needs two seeds), got {args.variety_seeds}")
    names = [f"{name}@{k}" for name, _, k in args.student]
    if len(set(names)) != len(names):
        raise ValueError(f"--student names must differ, got {names}")
    if not os.path.isfile(args.report):
        raise ValueError(f"--report: no such file {args.report}")


# ---------------------------------------------------------------------------------------------- systems


def baselines() -> list[System]:
    """The teacher's rows and the built-in student's (its own recipe)."""

    def sway(steps):
        return SamplingRecipe(steps=steps, cfg_strength=2.0, sway_sampling_coef=-1.0, use_epss=False)

    return [
        System(REFERENCE_ROW, TEACHER, sway(32)),
        System("teacher@4 sway cfg2", TEACHER, sway(4)),
        System("teacher@2 sway cfg2", TEACHER, sway(2)),
        System("teacher@1 cfg2", TEACHER, SamplingRecipe(steps=1, sway_sampling_coef=None, use_epss=False)),
        System("EPSS@7 cfg2", TEACHER, SamplingRecipe(steps=7, cfg_strength=2.0, sway_sampling_coef=-1.0)),
        System("builtin:student", "builtin:student", None),  # its recorded recipe, filled in on loading
    ]


def student_recipe(recorded: SamplingRecipe | None, steps: int) -> SamplingRecipe:
    """The student's recorded grid at ``steps`` steps without guidance (a custom grid of another length,
    or no recipe at all: uniform; sway keeps its recorded coefficient)."""
    if recorded is None:
        return SamplingRecipe(steps=steps, cfg_strength=0.0, sway_sampling_coef=None, use_epss=False)
    if recorded.t_grid is not None:
        if len(recorded.t_grid) - 1 == steps:
            return dataclasses.replace(recorded, cfg_strength=0.0)
        return SamplingRecipe(steps=steps, cfg_strength=0.0, sway_sampling_coef=None, use_epss=False)
    return dataclasses.replace(recorded, steps=steps, cfg_strength=0.0)


def student_systems(students: list[tuple[str, str, int | None]], calls: list[int]) -> list[System]:
    """A row per student and call count (``--calls``, or the one its ``NAME@K`` fixes)."""
    return [
        System(f"{name}@{k}", spec, None, student=name, calls=k)
        for name, spec, fixed in students
        for k in ([fixed] if fixed else calls)
    ]


# ---------------------------------------------------------------------------------------------- sampling


class Models:
    """Models, options and references, loaded once per spec."""

    def __init__(self, clip: torch.Tensor, ref_text: str):
        self.clip, self.ref_text, self.cache = clip, ref_text, {}

    def get(self, spec: str):
        if spec not in self.cache:
            model = flowtts.load(spec)
            options = recommended_options(model)
            reference = prepare_reference(model, self.clip, self.ref_text, options)
            self.cache[spec] = (model, options, reference)
        return self.cache[spec]


def resolve_recipe(system: System, model) -> SamplingRecipe:
    """The recipe a row samples with (the model's step rule; students' from their recorded recipe)."""
    recorded = SamplingRecipe.for_model(model)
    if system.student is not None:
        recipe = student_recipe(SamplingRecipe.from_metadata(model.metadata), system.calls)
    else:
        recipe = system.recipe if system.recipe is not None else recorded
    return dataclasses.replace(recipe, method=recorded.method)


def options_for(base, recipe: SamplingRecipe):
    fields = recipe.sample_kwargs()
    fields.setdefault("t_grid", None)
    fields.setdefault("use_epss", False)
    return dataclasses.replace(base, **fields)


def run_system(system: System, models: Models, texts, seed: int, judges: dict) -> Result:
    """Sample and score every sentence once (one call per sentence, so the time is per utterance)."""
    model, base, reference = models.get(system.spec)
    recipe = resolve_recipe(system, model)
    options = options_for(base, recipe)
    vocoder = GriffinLim(model.mel_spec)
    result = Result(system.label, recipe.nfe(), list(texts), recipe=recipe)
    for i, text in enumerate(texts):
        got = {}
        score = score_model(
            model,
            [text],
            [reference],
            asr=judges["asr"],
            options=options,
            vocoder=vocoder,
            similarity=judges["sim"],
            seeds=[seed + i],
            label=system.label,
            on_utterance=lambda _, u, got=got: got.setdefault("u", u),
            recognizer=judges["ctc"],
        )
        add_sentence(result, score, got["u"].mel, got["u"].wave)
    return result


def add_sentence(result: Result, score, mel: torch.Tensor, wave: torch.Tensor) -> None:
    result.transcripts += score.transcripts
    result.ctc_transcripts += score.ctc_transcripts
    result.sims += score.sims
    if score.seconds is not None:
        result.seconds.append(score.seconds)
    result.mels.append(mel.detach().float().cpu())
    result.waves.append(wave.detach().float().cpu())


def run_variety(system: System, models: Models, texts, seed: int, result: Result, n_seeds: int) -> float | None:
    """Variety over the first ``len(texts)`` sentences: seed ``seed + i`` (the main run's) and more."""
    if not texts:
        return None
    model, base, reference = models.get(system.spec)
    options = options_for(base, result.recipe)
    vocoder = GriffinLim(model.mel_spec)
    per_sentence = []
    for i, text in enumerate(texts):
        seeds = [seed + i + j * VARIETY_SEED_STRIDE for j in range(1, n_seeds)]
        out = synthesize(model, reference, [text] * len(seeds), vocoder=vocoder, options=options, seeds=seeds)
        per_sentence.append([result.mels[i]] + [u.mel.float() for u in out])
    return variety(per_sentence)


def run_recordings(waves, texts, mel_spec, reference, judges) -> Result:
    """The recordings' mels through Griffin-Lim, scored like a model's output."""
    griffin = GriffinLim(mel_spec)
    with torch.no_grad():
        resynth = [griffin(mel_spec(w[None]))[0] for w in waves]
    score = score_recordings(
        resynth,
        texts,
        [reference] * len(texts),
        sample_rate=RATE,
        mel_spec=mel_spec,
        asr=judges["asr"],
        similarity=judges["sim"],
        label=RECORDINGS_ROW,
        recognizer=judges["ctc"],
    )
    result = Result(RECORDINGS_ROW, None, list(texts), score.transcripts, score.ctc_transcripts, score.sims)
    with torch.no_grad():
        result.mels = [mel_spec(w[None])[0] for w in waves]
    result.waves = [w.float() for w in resynth]
    return result


# ---------------------------------------------------------------------------------------------- scoring


def add_dnsmos(result: Result) -> None:
    for wave in result.waves:
        score = dnsmos(wave, RATE)
        result.p808.append(score.p808)
        result.ovrl.append(score.ovrl)


def analysis_features(waves, mel_spec) -> list[torch.Tensor]:
    """Frames + deltas of each wave re-analysed by the model's front end, at RMS :data:`ANALYSIS_RMS`."""
    feats = []
    with torch.no_grad():
        for wave in waves:
            rms = wave.float().pow(2).mean().sqrt().clamp(min=1e-8)
            feats.append(frame_features(mel_spec((wave.float() * (ANALYSIS_RMS / rms))[None])[0]))
    return feats


def sentence_errors(texts, transcripts) -> list[tuple[int, int]]:
    """``(word edits, reference words)`` of each sentence."""
    pairs = []
    for ref, hyp in zip(texts, transcripts):
        r = normalize_words(ref)
        pairs.append((edit_distance(r, normalize_words(hyp)), len(r)))
    return pairs


def wer_stats(texts, transcripts) -> dict:
    """Corpus WER, its standard error over sentences (ratio estimator) and the WER of each half."""
    pairs = sentence_errors(texts, transcripts)
    edits, words = sum(e for e, _ in pairs), sum(w for _, w in pairs)
    wer = edits / words
    n = len(pairs)
    se = None
    if n > 1:
        residual = sum((e - wer * w) ** 2 for e, w in pairs)
        se = math.sqrt(n / (n - 1) * residual) / words
    half = (n + 1) // 2
    halves = [word_error_rate(texts[:half], transcripts[:half])]
    if n > 1:
        halves.append(word_error_rate(texts[half:], transcripts[half:]))
    return dict(wer=wer, se=se, halves=halves, per_sentence=pairs)


def mean_distance(mels, reference_mels) -> float | None:
    """Mean of :func:`mel_distance` over the sentences whose durations match (``None`` when none do)."""
    pairs = [(a, b) for a, b in zip(mels, reference_mels) if a.shape == b.shape]
    return sum(mel_distance(a, b) for a, b in pairs) / len(pairs) if pairs else None


def finish(results: list[Result], mel_spec, reference: Result | None) -> None:
    """Fréchet distances to the recordings and distances to teacher@32."""
    recordings = results[0]
    target = fit_gaussian(analysis_features(recordings.waves, mel_spec))
    for result in results:
        result.frechet = frechet_distance(fit_gaussian(analysis_features(result.waves, mel_spec)), target)
        if reference is not None and result is not recordings:
            result.distance = mean_distance(result.mels, reference.mels)


# ---------------------------------------------------------------------------------------------- output


def fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def mean_or_none(values):
    return sum(values) / len(values) if values else None


def table_row(result: Result, teacher: Result | None) -> dict[str, str]:
    stats = wer_stats(result.texts, result.transcripts)
    ratio = None
    if teacher is not None and teacher.variety and result.variety is not None:
        ratio = result.variety / teacher.variety
    return {
        "system": result.label,
        "NFE": "" if result.nfe is None else str(result.nfe),
        "WER": fmt(stats["wer"]),
        "±SE": fmt(stats["se"]),
        "WER halves": "/".join(fmt(h, 2) for h in stats["halves"]),
        "SIM": fmt(mean_or_none(result.sims)),
        "CTC WER (not for CTC-trained)": fmt(word_error_rate(result.texts, result.ctc_transcripts))
        if result.ctc_transcripts
        else "n/a",
        "DNSMOS P808": fmt(mean_or_none(result.p808), 2),
        "OVRL": fmt(mean_or_none(result.ovrl), 2),
        "FD": fmt(result.frechet, 2),
        "variety": fmt(result.variety),
        "var/t@32": fmt(ratio, 2),
        "dist@32": fmt(result.distance),
        "s/utt": fmt(statistics.median(result.seconds), 2) if result.seconds else "",
    }


def key_ratios(results: list[Result], teacher: Result | None) -> str:
    """One line: each student row's WER, FD and variety over teacher@32's."""
    if teacher is None:
        return "key ratios: n/a (no teacher@32 row; --skip-baselines)"
    t_wer = wer_stats(teacher.texts, teacher.transcripts)["wer"]
    parts = []
    for r in results[1:]:
        if r.label == REFERENCE_ROW:
            continue
        wer = wer_stats(r.texts, r.transcripts)["wer"]
        ratios = [
            wer / t_wer if t_wer else None,
            r.frechet / teacher.frechet if teacher.frechet else None,
            r.variety / teacher.variety if teacher.variety and r.variety is not None else None,
        ]
        parts.append(f"{r.label} {'/'.join(fmt(x, 2) for x in ratios)}")
    return "key ratios to teacher@32 (WER/FD/variety): " + "; ".join(parts)


def to_json(result: Result) -> dict:
    stats = wer_stats(result.texts, result.transcripts)
    return {
        "label": result.label,
        "nfe": result.nfe,
        "recipe": None if result.recipe is None else dataclasses.asdict(result.recipe),
        "wer": stats["wer"],
        "wer_se": stats["se"],
        "wer_halves": stats["halves"],
        "sentence_edits_words": stats["per_sentence"],
        "sim": mean_or_none(result.sims),
        "sims": result.sims,
        "ctc_wer": word_error_rate(result.texts, result.ctc_transcripts) if result.ctc_transcripts else None,
        "dnsmos_p808": mean_or_none(result.p808),
        "dnsmos_ovrl": mean_or_none(result.ovrl),
        "dnsmos_p808_per_sentence": result.p808,
        "frechet": result.frechet,
        "variety": result.variety,
        "distance_to_teacher32": result.distance,
        "seconds_per_utterance": result.seconds,
        "median_seconds": statistics.median(result.seconds) if result.seconds else None,
        "transcripts": result.transcripts,
        "ctc_transcripts": result.ctc_transcripts,
    }


def save_figure(path: str, results: list[Result], systems: list[System], index: int = 0) -> None:
    """Mels of sentence ``index``: recording, teacher@32 and each student at 2 calls, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {RECORDINGS_ROW, REFERENCE_ROW} | {s.label for s in systems if s.student is not None and s.calls == 2}
    shown = [r for r in results if r.label in labels]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3), squeeze=False)
    for ax, r in zip(axes[0], shown):
        ax.imshow(r.mels[index].numpy(), origin="lower", aspect="auto", cmap="magma")
        ax.set_title(r.label, fontsize=9)
        ax.set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(out: str, text: str, results, systems, args) -> None:
    os.makedirs(out, exist_ok=True)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    header = f"command: {command}\nreport split: {os.path.abspath(args.report)}\nseed: {args.seed}\n\n"
    with open(os.path.join(out, "few_step.txt"), "w", encoding="utf-8") as f:
        f.write(header + text + "\n")
    payload = {"command": command, "report": os.path.abspath(args.report), "seed": args.seed, "n": args.n}
    payload["rows"] = [to_json(r) for r in results]
    with open(os.path.join(out, "few_step.json"), "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
    save_figure(os.path.join(out, "few_step_mels.png"), results, systems)


# ---------------------------------------------------------------------------------------------- main


def load_split(path: str, n: int):
    rows = read_metadata(path)[:n]
    root = os.path.dirname(os.path.abspath(path))
    texts = [text for _, _, text in rows]
    waves = [read_audio(os.path.join(root, audio), RATE)[0] for _, audio, _ in rows]
    return texts, waves


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from flowtts.checkpoints.loader import builtin_reference

    ref_audio, ref_text = builtin_reference()
    models = Models(read_audio(ref_audio, RATE)[0], ref_text)
    texts, waves = load_split(args.report, args.n)
    teacher, _, reference = models.get(TEACHER)
    judges = dict(asr=PocketSphinx(), sim=speaker_similarity_or_none(teacher.mel_spec), ctc=load_recognizer())
    systems = ([] if args.skip_baselines else baselines()) + student_systems(args.student, args.calls)
    start = time.perf_counter()
    results = [run_recordings(waves, texts, teacher.mel_spec, reference, judges)]
    for system in systems:
        print(f"[{time.perf_counter() - start:6.0f} s] {system.label}", file=sys.stderr, flush=True)
        result = run_system(system, models, texts, args.seed, judges)
        variety_texts = texts[: args.variety_texts]
        result.variety = run_variety(system, models, variety_texts, args.seed, result, args.variety_seeds)
        results.append(result)
    if dnsmos_available():
        limit_threads(args.threads)
        for result in results:
            add_dnsmos(result)
    else:
        print("DNSMOS: n/a (pip install speechmos onnxruntime)", file=sys.stderr)
    t32 = next((r for r in results if r.label == REFERENCE_ROW), None)
    finish(results, teacher.mel_spec, t32)
    text = table([table_row(r, t32) for r in results], list(table_row(results[0], t32)))
    text += "\n" + key_ratios(results, t32)
    print(text)
    print(f"[{time.perf_counter() - start:.0f} s in all, {len(texts)} sentences]", file=sys.stderr)
    if args.out:
        write_outputs(args.out, text, results, systems, args)


if __name__ == "__main__":
    main()
