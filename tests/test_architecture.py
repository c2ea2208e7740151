"""The house rules a newcomer relies on: layers enforced, no import cycles, imports at the top, every
module listed in the README's Layout, modules small enough to read."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hwnas"
LONG_REASON = "Why one module this long:"
MAX_LINES = 400

# Imports allowed inside functions, each an optional or heavy dependency only some paths need.
LAZY_IMPORTS = {
    "ray": "optional (the ray extra); only --workers / --ray-address use it",
    "onnxruntime": "optional (the onnx extra); only the ONNX export checks its file with it",
    "matplotlib": "about 1 s to import; only hwnas report draws",
    "torch.ao": "PyTorch's quantization flow; only the int8 export uses it",
    "transformers": "seconds to import; only a Hugging Face tokenizer or checkpoint needs it",
}
# Imports of hwnas modules allowed inside functions, by file (the reason is at each import).
LAZY_HWNAS = {"hwnas/job/handle.py": ("hwnas.export.candidate",)}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_the_layers_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.exists(), "lint-imports is missing: install the dev extra (import-linter)"
    run = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout and "Layers: a module imports only from the layers below it KEPT" in run.stdout


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.find_modules_directly_imported_by(v)):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_the_import_graph_has_no_cycle_counting_imports_inside_functions():
    graph = grimp.build_graph("hwnas", include_external_packages=True, cache_dir=None)
    # The graph sees imports inside functions: ray is imported only inside functions.
    assert "ray" in graph.find_modules_directly_imported_by("hwnas.train.distributed")
    internal = grimp.build_graph("hwnas", cache_dir=None)
    assert _cycles(internal) == []


def test_cycle_finder_finds_a_cycle():
    class Graph:
        modules = {"a", "b", "c"}

        @staticmethod
        def find_modules_directly_imported_by(m):
            return {"a": {"b"}, "b": {"a"}, "c": {"a"}}[m]

    assert _cycles(Graph()) == [["a", "b"]]


def test_imports_inside_functions_are_only_optional_or_heavy_dependencies():
    """The CLI's commands import the layers they run (nothing imports the CLI, so no cycle can hide
    there, and ``hwnas --help`` need not import torch): see hwnas/cli/app.py's docstring."""
    offenders = []
    for path in _modules():
        lazy = (*LAZY_IMPORTS, *(("hwnas",) if path.parent == PACKAGE / "cli" else ()),
                *LAZY_HWNAS.get(str(path.relative_to(REPO)), ()))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                names = ([a.name for a in sub.names] if isinstance(sub, ast.Import)
                         else [sub.module or ""] if isinstance(sub, ast.ImportFrom) else [])
                for name in names:
                    if not any(name == root or name.startswith(root + ".") for root in lazy):
                        offenders.append(f"{path.relative_to(REPO)}:{sub.lineno} imports {name}")
    assert offenders == []


def _layout_paths(readme: str) -> set[str]:
    """Module paths the README's Layout block names: a top-level line names a path; an indented
    line names files (or a subfolder and its files) of the folder above it."""
    section = readme.split("## Layout", 1)[1]
    block = section.split("```", 2)[1]
    named: set[str] = set()
    base = here = ""
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        first = line.split()[0].rstrip(",")
        if indent == 0:
            base = here = first if first.endswith("/") else str(Path(first).parent) + "/"
        elif first.endswith("/"):
            here = base + first
        elif indent <= 2:
            here = base
        for name in re.findall(r"[\w]+\.py", line):
            named.add(name if name.startswith("hwnas/") else here + name)
        named.update(t for t in re.findall(r"hwnas/[\w/]+\.py", line))
    return named


def test_every_module_is_in_the_readme_layout():
    named = _layout_paths((REPO / "README.md").read_text(encoding="utf-8"))
    modules = {str(p.relative_to(REPO)) for p in _modules()
               if p.name != "__init__.py" or p.parent == PACKAGE}
    assert sorted(modules - named) == []


def test_modules_are_small_or_say_why_not():
    long = []
    for path in _modules():
        text = path.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > MAX_LINES and LONG_REASON not in doc:
            long.append(f"{path.relative_to(REPO)} ({len(text.splitlines())} lines)")
    assert long == []


def test_the_config_is_a_leaf_reading_a_file_loads_no_framework():
    code = ("import sys, hwnas.config as c; c.load_config(None); "
            "print(sorted(m for m in ('torch', 'timm', 'pymoo', 'sklearn', 'optuna') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr
