"""The package's shape: arrows point down, inference never loads training, ``import flowtts`` is light."""

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "flowtts"
ENTRY_POINTS = {"cli", "app", "api", "serving"}  # argparse, the web app, F5-TTS's Python API, the socket server


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_statements(path: Path):
    """``(module, names)`` of every import in ``path``, at module level or inside functions (relative
    imports resolved; ``names`` empty for ``import a.b``)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            yield base, tuple(alias.name for alias in node.names)


def _imports(path: Path) -> set[str]:
    """Every flowtts module ``path`` imports, at module level or inside functions."""
    found = set()
    for base, names in _import_statements(path):
        found.add(base)
        found.update(f"{base}.{name}" for name in names)
    return {name for name in found if name.startswith("flowtts.")}


def _group(module: str) -> str:
    return module.split(".")[1]


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = _module_name(path)
        if source == "flowtts":
            continue  # the lazy top-level namespace
        for target in _imports(path):
            if _group(target) != _group(source):
                edges.setdefault(_group(source), set()).add(_group(target))
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_scan_finds_imports_inside_functions_and_a_planted_cycle(tmp_path):
    path = PACKAGE / "synthesis" / "speech.py"
    assert "flowtts.text.chunking" in _imports(path)  # module level
    assert "flowtts.audio.silence" in _imports(path)  # inside a function
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_import_cycle_between_subpackages():
    edges = _graph()
    assert _cycle(edges) is None, _cycle(edges)


def test_only_entry_points_import_the_entry_points():
    edges = _graph()
    for source, targets in edges.items():
        if source != "cli":
            assert "cli" not in targets, source
        if source not in {"cli", "api"}:
            assert not targets & {"api", "demo"}, (source, targets)
    assert not edges.get("synthesis", set()) & {"train", "eval", "cli"}
    assert not edges.get("model", set()) & {"train", "eval", "synthesis", "checkpoints", "cli"}
    assert not edges.get("sampling", set()) - {"utils"}
    assert not edges.get("vocoder", set()) & {"train", "eval", "synthesis", "cli"}  # inference's last stage
    assert not edges.get("prefs", set()) & {"cli", "app"}


def test_evaluation_sits_above_synthesis():
    """``eval`` scores what synthesis makes, so only entry points, training and the preference layer (its
    machine judges and learned reward read the recogniser) import it; reference transcription, which
    synthesis' callers need, lives below (``flowtts.audio.transcribe``)."""
    edges = _graph()
    assert {source for source, targets in edges.items() if "eval" in targets} <= ENTRY_POINTS | {"train", "prefs"}
    assert not {"flowtts.infer", "flowtts.edit", "flowtts.serve"} & set(_scan())  # the old re-export paths are gone


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_synthesis_loads_no_training_module():
    out = _run(
        "import sys, torch\n"
        "import flowtts\n"
        "from flowtts.audio.vocoders import GriffinLim\n"
        "from flowtts.synthesis import load_reference, recommended_options, synthesize\n"
        "model = flowtts.load('builtin:student')\n"
        "options = recommended_options(model)\n"
        "reference = load_reference(model, None, None, options)\n"
        "(u,) = synthesize(model, reference, ['Hello there.'], vocoder=GriffinLim(model.mel_spec, n_iter=2),"
        " options=options, seeds=[0], progress=False)\n"
        "assert u.wave.numel() > 0\n"
        "print(sorted(m for m in sys.modules if m.startswith('flowtts.train')))\n"
    )
    assert out.strip() == "[]"


def test_import_flowtts_stays_light():
    out = _run("import sys, flowtts\nprint(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    assert out.strip() == "[]"


def _imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``path`` imports, at module level or inside functions; ``from a.b import c``
    imports the module ``a.b.c`` when there is one (not the package ``a.b``), else ``a.b``."""
    found = set()
    for base, names in _import_statements(path):
        if not names:
            found.add(base)
        found.update(f"{base}.{name}" if f"{base}.{name}" in modules else base for name in names)
    return found & modules


def _scan() -> dict[str, tuple[Path, set[str]]]:
    """Every module of the package: its folder and the package's modules it imports."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: (path.parent, _imported_modules(path, set(paths))) for name, path in paths.items()}


def _mutual_pairs(scan: dict[str, tuple[object, set[str]]]) -> list[tuple[str, str]]:
    """The pairs of modules of one folder (a package's ``__init__`` is in its folder) that import each other."""
    pairs = set()
    for name, (folder, targets) in scan.items():
        for target in targets - {name}:
            other_folder, other_targets = scan[target]
            if other_folder == folder and name in other_targets:
                pairs.add(tuple(sorted((name, target))))
    return sorted(pairs)


def test_the_folder_scan_resolves_submodules_and_finds_a_planted_pair():
    scan = _scan()
    cfm = scan["flowtts.model.cfm"][1]
    assert "flowtts.model.sample_checks" in cfm and "flowtts.model" not in cfm  # from flowtts.model import a module
    assert "flowtts.model.quantize" in cfm  # imported inside a function
    planted = {"a.x": ("a", {"a.y"}), "a.y": ("a", {"a.x", "b.z"}), "b.z": ("b", {"a.y"}), "a.w": ("a", {"a.x"})}
    assert _mutual_pairs(planted) == [("a.x", "a.y")]  # b.z and a.y are in two folders; a.w one way only


def test_no_two_modules_of_one_folder_import_each_other():
    assert _mutual_pairs(_scan()) == []


def test_nothing_imports_the_command_line_or_the_web_app_but_themselves():
    """``flowtts.cli`` and ``flowtts.app`` only wire: the library, the API and the benchmarks never import them
    (what both need, e.g. multi-voice joining or edit parts, lives in ``synthesis``)."""
    wiring = {"cli", "app"}
    for source, targets in _graph().items():
        if source not in wiring:
            assert not targets & wiring, (source, targets & wiring)
    benchmarks = PACKAGE.parents[1] / "benchmarks"
    for path in benchmarks.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            assert not [n for n in names if n.split(".")[:2] in (["flowtts", "cli"], ["flowtts", "app"])], path
