"""``flowtts prefs make|synth|export|merge`` and ``flowtts rate``: collecting preferences between samples.

``prefs make`` samples pairs into a pairs folder, ``rate`` asks a listener about each pair in the terminal,
``prefs synth`` lets a machine judge decide pairs straight into a preferences file, ``prefs export`` and
``prefs merge`` copy and join preferences files (:mod:`flowtts.prefs`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from flowtts.cli.common import UserError, add_sampling_flags, check_sampling_flags, read_lines, sampling_options

DEFAULT_MODEL = "builtin:student"
ANSWERS = {"a": "a", "b": "b", "s": "same", "same": "same"}


def _positive(value: str) -> int:
    """argparse type of ``--n``: an integer >= 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _margin(value: str) -> float:
    """argparse type of ``--margin``: a number >= 0."""
    import math

    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {value}")
    return number


def _sampler(spec: str, args: argparse.Namespace):
    """The :class:`~flowtts.prefs.pairs.Sampler` of model ``spec`` with the command's sampling flags."""
    from flowtts.checkpoints.loader import load
    from flowtts.cli.common import load_vocoder
    from flowtts.prefs.pairs import make_sampler

    model = load(spec, device=args.device or "cpu")
    return make_sampler(model, spec, options=sampling_options(model, args), vocoder=load_vocoder(model, args))


def _rows(data: str, n: int | None, model=None, recordings: bool = False):
    """The first ``n`` sentences of ``data`` as :class:`~flowtts.prefs.judge.Row` (with their recordings'
    mels under ``model``'s front end when ``recordings``): a prepared dataset folder (``index.jsonl``), a folder
    with ``metadata.csv``, or a metadata file."""
    from flowtts.prefs.judge import Row, recording_mel

    if os.path.isdir(data) and os.path.isfile(os.path.join(data, "index.jsonl")):
        from flowtts.train.data import MelDataset

        dataset = MelDataset(data)
        if recordings:
            _check_front_end(dataset.info.get("mel", {}), model, data)
        items = [(i, it["text"]) for i, it in enumerate(dataset.items) if str(it.get("text", "")).strip()][:n]
        return [Row(text, f"{data}#{i}", (lambda i=i: dataset[i][0]) if recordings else None) for i, text in items]
    from flowtts.train.data import read_metadata

    metadata = os.path.join(data, "metadata.csv") if os.path.isdir(data) else data
    if not os.path.isfile(metadata):
        raise UserError(f"--data {data}: not a prepared dataset (index.jsonl), a folder with metadata.csv or a file")
    root = os.path.dirname(os.path.abspath(metadata))
    rows = [(os.path.join(root, audio), text) for _, audio, text in read_metadata(metadata) if text][:n]
    if not rows:
        raise UserError(f"{metadata} has no rows with a transcript (audio_file|text)")
    return [
        Row(text, audio, (lambda audio=audio: recording_mel(audio, model.mel_spec)) if recordings else None)
        for audio, text in rows
    ]


def _check_front_end(settings: dict, model, data: str) -> None:
    """Refuse a prepared dataset whose mels were made with another front end than ``model``'s."""
    differ = [name for name, value in settings.items() if getattr(model.mel_spec, name, value) != value]
    if differ:
        raise UserError(
            f"--data {data} was prepared with other mel settings than the model's ({', '.join(differ)}); "
            "prepare it again for this model or give its metadata.csv"
        )


def _check_output_file(path: str, flag: str) -> None:
    """Refuse, before any work or question, an output file that is a folder or whose folder cannot take it."""
    from flowtts.utils.files import check_writable_directory

    if os.path.isdir(path):
        raise UserError(f"{flag} {path} is a folder; give a file")
    try:
        check_writable_directory(os.path.dirname(os.path.abspath(path)))
    except ValueError as error:
        raise UserError(f"{flag} {path}: {error}") from None


def _skipped():
    def say(index: int, text: str, reason: str) -> None:
        print(f"skipped text {index + 1} ({text[:40]!r}): {reason}", file=sys.stderr)

    return say


def _make(args: argparse.Namespace) -> int:
    """``flowtts prefs make``: a pairs folder of two samples per text."""
    from flowtts.cli.common import set_threads
    from flowtts.prefs.pairs import make_pairs

    check_sampling_flags(args)
    if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
        raise UserError(f"--out {args.out} exists and is not an empty folder; choose a new one")
    texts = read_lines(args.texts) if args.texts else [row.text for row in _rows(args.data, None)]
    texts = texts[: args.n]
    set_threads(args)
    a = _sampler(args.model, args)
    b = _sampler(args.model_b, args) if args.model_b else None

    def made(index: int, folder: str) -> None:
        if not args.quiet:
            print(f"pair {os.path.basename(folder)}: {texts[index][:60]!r}", file=sys.stderr)

    folders = make_pairs(args.out, texts, a, b, seed=args.seed, on_pair=made, on_skip=_skipped())
    if not folders:
        raise UserError("no pair was made (every text was skipped)")
    print(f"{len(folders)} pairs in {args.out}; rate them with: flowtts rate {args.out} --prefs FILE")
    return 0


def _rate(args: argparse.Namespace) -> int:
    """``flowtts rate``: ask about each pair not yet answered in ``--prefs``; every answer is stored at once."""
    from flowtts.prefs.pairs import answered_pairs, list_pairs
    from flowtts.prefs.store import append_pair, pair_ids

    _check_output_file(args.prefs, "--prefs")
    pairs = list_pairs(args.folder)
    done = answered_pairs(pair_ids(args.prefs))
    todo = [pair for pair in pairs if pair.id not in done]
    print(f"{len(pairs)} pairs, {len(pairs) - len(todo)} answered in {args.prefs}, {len(todo)} to go")
    stored = 0
    for k, pair in enumerate(todo, start=1):
        print(f"\n[{k}/{len(todo)}] {pair.text}\n  A: {pair.wav('a')}\n  B: {pair.wav('b')}")
        answer = _ask()
        if answer == "q":
            break
        if answer == "k":
            continue
        append_pair(args.prefs, pair.answer(ANSWERS[answer]))
        stored += 1
    left = len(todo) - stored
    print(f"{stored} answers stored in {args.prefs}; {left} pairs unanswered")
    return 0


def _ask() -> str:
    """One answer from stdin: ``a``, ``b``, ``s`` (same), ``k`` (skip) or ``q`` (quit; also at end of input)."""
    while True:
        print("which is better? a / b / s(ame) / k(skip) / q(uit): ", end="", flush=True)
        line = _read_line()
        if not line:
            print()
            return "q"
        answer = line.strip().lower()
        if answer in ANSWERS:
            return answer
        if answer in ("k", "skip", "q", "quit"):
            return answer[0]
        print(f"  {answer!r}? answer a, b, s, k or q")


def _read_line() -> str:
    """A line of stdin; bytes that are not UTF-8 (a stray key, a pasted Latin-1 word) read as U+FFFD, so that
    they make an answer to ask again rather than end the session."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text stream without bytes under it (a test's StringIO)
        return sys.stdin.readline()
    return buffer.readline().decode("utf-8", errors="replace")


def _synth(args: argparse.Namespace) -> int:
    """``flowtts prefs synth``: machine-judged pairs appended to a preferences file."""
    from flowtts.cli.common import set_threads
    from flowtts.prefs.judge import QualityJudge, RecognizerJudge, judged_pairs
    from flowtts.prefs.store import append_pair, count_pairs

    check_sampling_flags(args)
    if args.margin is not None and args.judge != "dnsmos":
        raise UserError("--margin goes with --judge dnsmos")
    _check_output_file(args.out, "--out")
    before = count_pairs(args.out)  # refuses a file that is not a preferences file, before any work
    set_threads(args)
    if args.judge == "pocketsphinx":
        judge = RecognizerJudge()
    elif args.judge == "dnsmos":
        judge = QualityJudge(margin=args.margin) if args.margin is not None else QualityJudge()
    else:
        judge = "recording"
    sampler = _sampler(args.model, args)
    rows = _rows(args.data, args.n, sampler.model, recordings=args.judge == "recording")
    made = 0
    for record in judged_pairs(sampler, rows, judge, seed=args.seed, on_skip=_skipped()):
        append_pair(args.out, record)
        made += 1
        if not args.quiet:
            print(f"{made}/{len(rows)}: {record.choice} ({record.text[:50]!r})", file=sys.stderr)
    if not made:
        raise UserError("no pair was made (every row was skipped)")
    print(f"{made} pairs judged by {args.judge} appended to {args.out} ({before + made} answers)")
    return 0


def _refuse_existing(out: str, inputs: list[str]) -> None:
    if os.path.exists(out) and not any(os.path.exists(p) and os.path.samefile(out, p) for p in inputs):
        raise UserError(f"--out {out} exists; choose a new file")
    _check_output_file(out, "--out")


def _export(args: argparse.Namespace) -> int:
    """``flowtts prefs export``: copy the valid answers of a preferences file."""
    from flowtts.prefs.store import export_pairs

    _refuse_existing(args.out, [])
    print(f"{export_pairs(args.file, args.out)} answers written to {args.out}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    """``flowtts prefs merge``: join preferences files, one answer per id."""
    from flowtts.prefs.store import merge_pairs

    _refuse_existing(args.out, args.inputs)
    print(f"{merge_pairs(args.inputs, args.out)} answers written to {args.out}")
    return 0


def _sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"the model (default: {DEFAULT_MODEL})")
    add_sampling_flags(parser, ("steps", "cfg", "sway", "speed"))
    add_sampling_flags(parser, ("run_seed",), run_seed="pair i samples with seeds seed + 2i and seed + 2i + 1 (0)")
    parser.add_argument("--n", type=_positive, help="at most this many texts (default: all)")
    add_sampling_flags(parser, ("vocoder", "vocoder_path", "device", "threads"))
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.set_defaults(seed=0)


def add_prefs(sub) -> None:
    """Register ``prefs`` (make, synth, export, merge, and train where :mod:`flowtts.cli.prefs_train` exists)."""
    prefs = sub.add_parser("prefs", help="collect preferences between two samples of a text (and learn from them)")
    commands = prefs.add_subparsers(dest="prefs_command", required=True)

    make = commands.add_parser("make", help="sample pairs to rate into a pairs folder (NNNN/a.wav, b.wav, pair.json)")
    make.add_argument("--out", required=True, help="the pairs folder (new or empty)")
    source = make.add_mutually_exclusive_group(required=True)
    source.add_argument("--texts", help="a text file, one text per line")
    source.add_argument("--data", help="the sentences of a dataset (prepared folder, folder with metadata.csv, file)")
    make.add_argument("--model-b", help="sample side B with this model (default: --model with another seed)")
    _sampling(make)
    make.set_defaults(func=_make)

    synth = commands.add_parser("synth", help="pairs decided by a machine judge, appended to a preferences file")
    synth.add_argument("--out", required=True, help="the preferences file (made, or appended to)")
    synth.add_argument("--judge", required=True, choices=("pocketsphinx", "recording", "dnsmos"), help="who decides")
    synth.add_argument("--data", required=True, help="the sentences (and recordings) of a dataset")
    synth.add_argument("--margin", type=_margin, help="dnsmos: P.808 differences up to this are 'same' (0.1)")
    _sampling(synth)
    synth.set_defaults(func=_synth)

    export = commands.add_parser("export", help="copy the valid answers of a preferences file")
    export.add_argument("file", help="the preferences file")
    export.add_argument("--out", required=True, help="the copy (a new file)")
    export.set_defaults(func=_export)

    merge = commands.add_parser("merge", help="join preferences files, one answer per id")
    merge.add_argument("inputs", nargs="+", help="the preferences files")
    merge.add_argument("--out", required=True, help="the joined file (new, or one of the inputs)")
    merge.set_defaults(func=_merge)

    if importlib.util.find_spec("flowtts.cli.prefs_train") is not None:
        from flowtts.cli.prefs_train import add_prefs_train

        add_prefs_train(commands)


def add_rate(sub) -> None:
    """Register ``rate``."""
    rate = sub.add_parser("rate", help="rate a pairs folder in the terminal (answers appended to --prefs)")
    rate.add_argument("folder", help="the pairs folder (flowtts prefs make)")
    rate.add_argument("--prefs", required=True, help="the preferences file (made, or appended to; rating resumes)")
    rate.set_defaults(func=_rate)
