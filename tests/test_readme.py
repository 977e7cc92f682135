"""The README stays true: its commands parse with today's command line, and its first example runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from flowtts.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = sorted((README.parent / "docs").glob("*.md"))  # the README's pages: their commands must stay true too


def _blocks(language: str, pages=(README,)) -> list[str]:
    text = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _commands() -> list[list[str]]:
    """Every complete ``flowtts ...`` command of the README's bash blocks, as argv (continuations joined)."""
    commands = []
    for block in _blocks("bash", (README, *DOCS)):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for i, word in enumerate(words):  # a command may follow `pip install ... &&`
                if word == "flowtts":
                    argv = words[i + 1 :]
                    argv = argv[: argv.index("&&")] if "&&" in argv else argv
                    if not any("..." in w for w in argv):  # "...same..." abbreviates an earlier command
                        commands.append(argv)
    return commands


def test_the_readme_is_a_guide_that_links_its_pages():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 450, "the README is a guide; histories and trial tables go to docs/"
    for page in DOCS:
        assert f"docs/{page.name}" in text, f"docs/{page.name} is linked from nowhere in the README"
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (README.parent / link).is_file(), f"the README links {link}, which does not exist"


def test_readme_lists_commands_of_every_kind():
    names = {argv[0] for argv in _commands()}
    assert {"demo", "infer", "edit", "data", "train", "eval", "distill", "reward"} <= names


@pytest.mark.parametrize("argv", _commands(), ids=lambda argv: " ".join(argv)[:60])
def test_readme_command_parses(argv, capsys):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"the README's `flowtts {' '.join(argv)}` is refused: {capsys.readouterr().err.strip()}")
    assert args.command == argv[0]


def test_readme_first_example_runs_and_its_gradient_reaches_every_parameter():
    code = _blocks("python")[0]
    assert "cache=False" in code and ".backward()" in code
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    model, mel, student_mel = scope["model"], scope["mel"], scope["student_mel"]
    assert mel.grad_fn is None and student_mel.grad_fn is not None
    assert mel.shape == student_mel.shape == (1, 300, 100)
    untouched = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not untouched, f"no gradient reached {untouched[:5]}"
