"""Preference fine-tuning before -> after, on one held-out report split (issue #35).

Usage: python benchmarks/preferences.py --report REPORT/metadata.csv --reward-model REWARD.safetensors \
           --model before=builtin:student --model reward=RUN1/model.safetensors [--model NAME=SPEC ...] \
           [--n 48] [--vocoder builtin|griffin-lim|auto|FILE] [--seed 0] [--threads 2] [--out DIR]

Each ``--model`` (a flowtts model file or a ``flowtts.load`` spec such as ``builtin:student``) speaks every
report sentence once, sentence ``i`` from seed ``seed + i``, with its own sampling recipe and recorded options
(``recommended_options``) and the built-in reference clip, rendered by ``--vocoder``. The first row,
"recordings", is the report's own recordings (their mels from the preference model's front end).

Columns (each judge with its standard error over sentences):
- reward: the learned preference model's score (``--reward-model``) of the generated frames only, prompt
  frames cut as the fine-tuning reward cuts them (``PreferenceReward``); the judge a reward run trains on.
- WER: pocketsphinx word error rate of the wave (corpus ratio; its SE is a ratio estimator's).
- SIM: resemblyzer cosine to the reference clip, as flowtts.eval.report computes it (n/a without resemblyzer).
- DNSMOS: P.808 MOS of the wave (speechmos; n/a without it; silent waves left out).
- s/utt: median synthesis seconds per utterance, vocoder included, scoring excluded.

The second table gives each row minus the first ``--model``'s, with the SE of that difference paired over
sentences (every row says the same sentences); "!" marks a judge worse by more than one SE (reward, SIM or
DNSMOS lower, WER higher).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

import flowtts
from _common import table
from few_step import RATE, load_split, sentence_errors
from flowtts.audio.io import read_audio
from flowtts.audio.transcribe import PocketSphinx
from flowtts.audio.vocoders import check_vocoder_choice, choose_vocoder
from flowtts.eval.dnsmos import dnsmos_available, limit_threads
from flowtts.eval.report import score_model, score_recordings, speaker_similarity_or_none
from flowtts.model.mel import MelSpec, mel_config_of
from flowtts.prefs.model import load_preference_model
from flowtts.synthesis import prepare_reference, recommended_options

RECORDINGS = "recordings"
HIGHER_IS_BETTER = {"reward": True, "WER": False, "SIM": True, "DNSMOS": True}


@dataclass
class Row:
    """What one row measured, one entry per sentence (``None``: no score, e.g. a silent wave's DNSMOS)."""

    label: str
    spec: str | None
    rewards: list[float] = field(default_factory=list)
    errors: list[tuple[int, int]] = field(default_factory=list)  # (word edits, reference words)
    sims: list[float] = field(default_factory=list)
    p808: list[float | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    transcripts: list[str] = field(default_factory=list)

    def judges(self) -> dict[str, tuple[list, list]]:
        """``judge -> (per-sentence values, weights)``: each judge's score is ``sum(values) / sum(weights)``."""
        ones = [1] * len(self.rewards)
        return {
            "reward": (self.rewards, ones),
            "WER": ([e for e, _ in self.errors], [w for _, w in self.errors]),
            "SIM": (self.sims, ones[: len(self.sims)]),
            "DNSMOS": (self.p808, ones[: len(self.p808)]),
        }


@dataclass
class Judges:
    """The learned reward, the mel front end it reads, and what score_model / score_recordings take (asr,
    similarity, dnsmos)."""

    reward: torch.nn.Module
    mel_spec: MelSpec
    scoring: dict


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", required=True, help="metadata csv (audio_file|text) of the report split")
    parser.add_argument("--n", type=int, default=48, help="sentences: the first n rows (all when fewer)")
    parser.add_argument("--reward-model", required=True, help="the learned preference model (.safetensors)")
    parser.add_argument("--model", action="append", default=[], help="NAME=SPEC, repeatable; the first is 'before'")
    parser.add_argument("--vocoder", default="builtin", help="builtin, griffin-lim, auto or a vocoder file")
    parser.add_argument("--seed", type=int, default=0, help="sentence i is sampled from seed + i")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="folder for preferences.txt and preferences.json")
    args = parser.parse_args(argv)
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Parse ``--model`` into ``(name, spec)`` pairs; ``ValueError`` naming the first bad flag."""
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    for flag, path in (("--report", args.report), ("--reward-model", args.reward_model)):
        if not os.path.isfile(path):
            raise ValueError(f"{flag}: no such file {path}")
    if not args.model:
        raise ValueError("--model: give at least one NAME=SPEC (the first is the 'before' row)")
    bad = [m for m in args.model if not all(m.partition("=")[::2])]
    if bad:
        raise ValueError(f"--model must be NAME=SPEC (a model file or builtin spec), got {bad[0]!r}")
    args.model = [m.partition("=")[::2] for m in args.model]
    names = [name for name, _ in args.model]
    if len(set(names)) != len(names) or RECORDINGS in names:
        raise ValueError(f"--model names must differ and not be {RECORDINGS!r}, got {names}")
    for name, spec in args.model:
        if not spec.startswith("builtin") and not os.path.isfile(spec):
            raise ValueError(f"--model {name}: no such model file {spec}")
    try:
        check_vocoder_choice(args.vocoder, "--vocoder")
    except FileNotFoundError as error:
        raise ValueError(str(error)) from None


@torch.no_grad()
def reward_of(judge, mel: torch.Tensor) -> float:
    """The preference model's score of one generated log-mel ``(d, n)`` (prompt frames already cut)."""
    return float(judge.score(mel.t()[None].float(), torch.tensor([mel.shape[1]]))[0])


def load_system(spec: str, clip: torch.Tensor, ref_text: str, vocoder: str, judge):
    """The model of ``spec``, its recommended options, the prepared built-in reference and the vocoder."""
    model = flowtts.load(spec)
    judge.check_fits(mel_config_of(model), f"--model {spec}")
    options = recommended_options(model)
    reference = prepare_reference(model, clip, ref_text, options)
    return model, options, reference, choose_vocoder(model, vocoder, name="--vocoder")


def speak(label: str, spec: str, system, texts, seed: int, judges: Judges) -> Row:
    """Every sentence said once (one call each, so the time is per utterance) and scored."""
    model, options, reference, vocoder = system
    row = Row(label, spec)
    heard = []  # each sentence's utterance, as score_model hands it on
    kwargs = dict(options=options, vocoder=vocoder, label=label, on_utterance=lambda _, u: heard.append(u))
    for i, text in enumerate(texts):
        score = score_model(model, [text], [reference], seeds=[seed + i], **kwargs, **judges.scoring)
        row.rewards.append(reward_of(judges.reward, heard[-1].mel))
        add_scores(row, score, [text])
        row.seconds.append(score.seconds)
    return row


def recordings_row(waves, texts, reference, judges: Judges) -> Row:
    """The report recordings scored like a model's output (their mels from the preference model's front end)."""
    kwargs = dict(sample_rate=RATE, mel_spec=judges.mel_spec, label=RECORDINGS)
    score = score_recordings(waves, texts, [reference] * len(texts), **kwargs, **judges.scoring)
    row = Row(RECORDINGS, None)
    with torch.no_grad():
        row.rewards = [reward_of(judges.reward, judges.mel_spec(w[None].float())[0]) for w in waves]
    add_scores(row, score, texts)
    return row


def add_scores(row: Row, score, texts) -> None:
    row.transcripts += score.transcripts
    row.errors += sentence_errors(texts, score.transcripts)
    row.sims += score.sims
    row.p808 += score.dnsmos_scores


def ratio_mean(values, weights) -> tuple[float | None, float | None]:
    """``sum(values) / sum(weights)`` over the entries with a value, and its standard error over them
    (the ratio estimator's; with unit weights, the standard error of the mean)."""
    pairs = [(v, w) for v, w in zip(values, weights) if v is not None]
    total = sum(w for _, w in pairs)
    if not pairs or total == 0:
        return None, None
    mean = sum(v for v, _ in pairs) / total
    n = len(pairs)
    if n < 2:
        return mean, None
    return mean, math.sqrt(n / (n - 1) * sum((v - mean * w) ** 2 for v, w in pairs)) / total


def paired_difference(row: Row, base: Row, judge: str) -> tuple[float | None, float | None]:
    """``row``'s score minus ``base``'s on the sentences both scored, and its paired standard error."""
    (values, weights), (base_values, _) = row.judges()[judge], base.judges()[judge]
    diffs = [None if a is None or b is None else a - b for a, b in zip(values, base_values)]
    return ratio_mean(diffs, weights)


def fmt(value, digits: int = 3, sign: str = "") -> str:
    return "n/a" if value is None else f"{value:{sign}.{digits}f}"


def summary_cells(row: Row) -> dict[str, str]:
    cells = {"system": row.label}
    for judge, (values, weights) in row.judges().items():
        mean, se = ratio_mean(values, weights)
        cells[judge], cells[f"{judge} ±SE"] = fmt(mean), fmt(se)
    cells["s/utt"] = fmt(statistics.median(row.seconds), 2) if row.seconds else ""
    return cells


def difference_cells(row: Row, base: Row) -> dict[str, str]:
    cells = {"system": f"{row.label} - {base.label}"}
    for judge, higher in HIGHER_IS_BETTER.items():
        delta, se = paired_difference(row, base, judge)
        worse = delta is not None and se is not None and (-delta if higher else delta) > se
        cells[f"Δ{judge}"], cells[f"Δ{judge} ±SE"] = fmt(delta, sign="+") + (" !" if worse else ""), fmt(se)
    return cells


def report_text(rows: list[Row], base: Row) -> str:
    summary = [summary_cells(r) for r in rows]
    differences = [difference_cells(r, base) for r in rows if r is not base]
    text = table(summary, list(summary[0]))
    if differences:
        text += f"\n\ndifferences to {base.label} (paired over sentences; ! = worse by more than one SE)\n"
        text += table(differences, list(differences[0]))
    return text


def to_json(row: Row, base: Row) -> dict:
    out = asdict(row)
    for judge, (values, weights) in row.judges().items():
        out[judge], out[f"{judge}_se"] = ratio_mean(values, weights)
        if row is not base:
            key = f"{judge}_minus_{base.label}"
            out[key], out[f"{key}_se"] = paired_difference(row, base, judge)
    out["median_seconds"] = statistics.median(row.seconds) if row.seconds else None
    return out


def write_outputs(out: str, text: str, rows: list[Row], base: Row, args) -> None:
    os.makedirs(out, exist_ok=True)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    facts = {"command": command, "report": os.path.abspath(args.report), "n": args.n, "seed": args.seed}
    facts.update(reward_model=os.path.abspath(args.reward_model), vocoder=args.vocoder)
    with open(os.path.join(out, "preferences.txt"), "w", encoding="utf-8") as f:
        f.write("".join(f"{k}: {v}\n" for k, v in facts.items()) + "\n" + text + "\n")
    with open(os.path.join(out, "preferences.json"), "w", encoding="utf-8") as f:
        json.dump({**facts, "rows": [to_json(r, base) for r in rows]}, f, indent=1)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from flowtts.checkpoints.loader import builtin_reference

    ref_audio, ref_text = builtin_reference()
    clip = read_audio(ref_audio, RATE)[0]
    judge = load_preference_model(args.reward_model)
    systems = {name: load_system(spec, clip, ref_text, args.vocoder, judge) for name, spec in args.model}
    texts, waves = load_split(args.report, args.n)
    mel_spec = MelSpec(**asdict(judge.mel))
    scoring = dict(asr=PocketSphinx(), similarity=speaker_similarity_or_none(mel_spec), dnsmos=dnsmos_available())
    if scoring["dnsmos"]:
        limit_threads(args.threads)
    judges = Judges(judge, mel_spec, scoring)
    start = time.perf_counter()
    rows = [recordings_row(waves, texts, systems[args.model[0][0]][2], judges)]
    for name, spec in args.model:
        print(f"[{time.perf_counter() - start:6.0f} s] {name}", file=sys.stderr, flush=True)
        rows.append(speak(name, spec, systems[name], texts, args.seed, judges))
    text = report_text(rows, rows[1])
    print(text)
    print(f"[{time.perf_counter() - start:.0f} s in all, {len(texts)} sentences]", file=sys.stderr)
    if args.out:
        write_outputs(args.out, text, rows, rows[1], args)


if __name__ == "__main__":
    main()
