"""Security: no unsafe deserialization, hostile files refused, no path escape, no leaked password.

1. An AST scan of every module of the ``hwnas`` package (not a grep: aliases such as
   ``from torch import load as f`` and ``getattr(yaml, "unsafe_load")`` are resolved, and
   ``model.eval()`` is not mistaken for ``eval``) for the ways Python runs code while reading
   data: pickle and its relatives, ``eval``/``exec``/``compile``, unsafe YAML loaders,
   ``torch.load`` without ``weights_only=True``, ``torch.jit.load``, ``numpy.load(allow_pickle=True)``,
   ``pandas.read_pickle`` and ``joblib.load``. The few uses that remain are listed in
   :data:`ALLOWED` with the reason each is safe; a planted file shows the scan can fail.
2. For every place hwnas reads a file (checkpoints, supernet weights, lookup tables and their
   imports, sample caches, configs and device specs, CIFAR batches, exports), a hostile file
   (a pickle whose ``__reduce__`` would create a marker file, a spreadsheet formula, absurdly
   nested JSON/YAML) is refused with an :class:`~hwnas.errors.HwnasError` naming the file, and
   the marker never appears.
3. Job names (and device names, which name files too) cannot escape the work directory. Paths the
   user gives on purpose (workdir, data.root, device.table, device.spec, space.init.checkpoint, the
   SQLite store, --out) are legitimately anywhere: hwnas reads them with the safe parsers above
   and writes only where it is pointed, so they are taken as given, not confined.
4. The store URL's password never reaches a terminal, a log, the job's stored attributes or its
   ``config.yaml`` (and so neither the report nor the export manifest, which are made from them).
"""
from __future__ import annotations

import ast
import builtins
import copy
import hashlib
import json
import logging
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import hwnas
from hwnas.errors import ArchError, ConfigError, DataError, HwnasError, JobError, LookupTableError
from hwnas.utils.io import record_digest

PACKAGE = Path(hwnas.__file__).resolve().parent
REPO = PACKAGE.parent

# =====================================================================================================
# 1. The static scan
# =====================================================================================================

#: Modules whose whole purpose is to rebuild arbitrary Python objects (and so run code) from bytes.
BANNED_MODULES = frozenset({"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve"})
#: Builtins that run code; ``compile`` only in a mode that yields code to run.
CODE_BUILTINS = frozenset({"eval", "exec"})
#: Unsafe YAML entry points and loaders (``yaml.safe_load`` is the only way to read YAML).
YAML_UNSAFE = frozenset({f"yaml.{n}" for n in (
    "load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all",
    "Loader", "UnsafeLoader", "FullLoader", "CLoader", "CUnsafeLoader", "CFullLoader",
    "UnsafeConstructor", "FullConstructor", "Constructor")})
#: Always flagged wherever referenced: loaders that unpickle (or, for TorchScript, load code).
ALWAYS = frozenset({"pandas.read_pickle", "joblib.load", "torch.jit.load", "torch.package.PackageImporter",
                    "numpy.lib.format.read_array"})
#: Flagged unless called with the safe keyword.
TORCH_LOAD = frozenset({"torch.load", "torch.serialization.load"})
NUMPY_LOAD = frozenset({"numpy.load"})

#: (file, rule, scope) -> why that use is safe. Keep it short: every entry must still match (see
#: test_allowlist_has_no_stale_entries), so removing a use removes its licence too.
ALLOWED: dict[tuple[str, str, str], str] = {
    ("hwnas/utils/safe_pickle.py", "import:pickle", "<module>"):
        "CIFAR-10's official 'python' batches and HW-NAS-Bench's .npy tables are pickles; hwnas reads them "
        "only through this module's NumpyOnlyUnpickler",
    ("hwnas/utils/safe_pickle.py", "ref:pickle.Unpickler", "NumpyOnlyUnpickler"):
        "NumpyOnlyUnpickler subclasses pickle.Unpickler and overrides find_class with an allowlist of numpy's "
        "array-rebuilding globals: any other global raises RefusedGlobal before it is resolved, so a hostile "
        "batch or table cannot name a callable (test_cifar_batches_refuse_a_pickle_payload, "
        "test_an_npy_table_holding_anything_but_numbers_is_refused_without_running_it)",
    ("hwnas/utils/safe_pickle.py", "ref:pickle.UnpicklingError", "RefusedGlobal"):
        "RefusedGlobal is an UnpicklingError: the error NumpyOnlyUnpickler raises, not a loader",
    ("hwnas/export/formats.py", "ref:torch.jit.load", "load_torchscript"):
        "reloads the TorchScript file the export has just written, to check it against the supernet. "
        "TorchScript's loader does not unpickle arbitrary Python globals (its unpickler only restores "
        "tensors and TorchScript types), but a TorchScript archive IS code: its graph runs when the model "
        "is called. So it is allowed only here, on files hwnas wrote itself, never on a user's path",
}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    scope: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule} (in {self.scope})"


class _Scanner(ast.NodeVisitor):
    def __init__(self, tree: ast.AST, path: str):
        self.path = path
        self.findings: list[Finding] = []
        self.scope: list[str] = []
        self.handled: set[int] = set()  # func nodes of calls whose arguments were checked
        # Aliases from every import in the file, whatever its scope (hwnas imports lazily inside
        # functions); a name bound two ways is rare enough that over-approximating is fine.
        self.alias: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.alias[a.asname] = a.name
                    else:
                        self.alias[a.name.split(".")[0]] = a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.alias[a.asname or a.name] = f"{node.module}.{a.name}"

    # -- helpers -----------------------------------------------------------------------------------
    def flag(self, node: ast.AST, rule: str) -> None:
        self.findings.append(Finding(self.path, getattr(node, "lineno", 0), rule,
                                     ".".join(self.scope) or "<module>"))

    def resolve(self, node: ast.AST) -> str | None:
        """The dotted name an expression refers to, through import aliases and getattr(x, "name")."""
        if isinstance(node, ast.Name):
            name = self.alias.get(node.id, node.id)
        elif isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str)):
            base = self.resolve(node.args[0])
            return f"{base}.{node.args[1].value}" if base else None
        else:
            return None
        return name

    def check_ref(self, node: ast.AST, name: str | None) -> None:
        if not name:
            return
        head = name.split(".")[0]
        if head in BANNED_MODULES and "." in name:
            self.flag(node, f"ref:{name}")
        elif name in YAML_UNSAFE or name in ALWAYS:
            self.flag(node, f"ref:{name}")
        elif name in CODE_BUILTINS or name in {f"builtins.{b}" for b in CODE_BUILTINS}:
            self.flag(node, f"call:{name.removeprefix('builtins.')}")
        elif (name in TORCH_LOAD or name in NUMPY_LOAD) and id(node) not in self.handled:
            self.flag(node, f"ref:{name} (not called, so its safe keyword cannot be checked)")

    def import_rule(self, node: ast.AST, module: str) -> None:
        if set(module.split(".")) & BANNED_MODULES:
            bad = next(p for p in module.split(".") if p in BANNED_MODULES)
            self.flag(node, f"import:{bad}")

    # -- scopes ------------------------------------------------------------------------------------
    def _scoped(self, node):
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    # -- imports -----------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.import_rule(node, a.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            self.import_rule(node, node.module)
            for a in node.names:
                if a.name in BANNED_MODULES:
                    self.import_rule(node, a.name)
                else:
                    self.check_ref(node, f"{node.module}.{a.name}")

    # -- references and calls ----------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and node.id not in self.alias:
            self.check_ref(node, node.id if node.id in CODE_BUILTINS else None)
        elif isinstance(node.ctx, ast.Load):
            self.check_ref(node, self.alias[node.id] if "." in self.alias[node.id] else None)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.check_ref(node, self.resolve(node))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = self.resolve(node.func)
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        splat = any(k.arg is None for k in node.keywords)
        if name in TORCH_LOAD:
            self.handled.add(id(node.func))
            safe = keywords.get("weights_only")
            if not (isinstance(safe, ast.Constant) and safe.value is True):
                self.flag(node, f"call:{name} without weights_only=True")
        elif name in NUMPY_LOAD:
            self.handled.add(id(node.func))
            allow = keywords.get("allow_pickle")
            if splat or (allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False)):
                self.flag(node, f"call:{name} with allow_pickle")
        elif name in ("compile", "builtins.compile") and "compile" not in self.alias:
            mode = node.args[2] if len(node.args) >= 3 else keywords.get("mode")
            if mode is not None and not (isinstance(mode, ast.Constant) and mode.value not in ("exec", "eval",
                                                                                                 "single")):
                self.flag(node, "call:compile (exec/eval mode)")
        elif name in ("__import__", "importlib.import_module") and node.args and isinstance(
                node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            self.import_rule(node, node.args[0].value)
        if isinstance(node.func, ast.Name) and node.func.id == "getattr":
            self.check_ref(node, self.resolve(node))
        self.generic_visit(node)


def scan_source(text: str, path: str) -> list[Finding]:
    tree = ast.parse(text, filename=path)
    scanner = _Scanner(tree, path)
    scanner.visit(tree)
    return scanner.findings


def scan_tree(root: Path, relative_to: Path) -> tuple[list[Finding], list[Path]]:
    """Scan every ``*.py`` under ``root`` (recursively); return the findings and the files read."""
    files = sorted(root.rglob("*.py"))
    findings = []
    for file in files:
        findings += scan_source(file.read_text(encoding="utf-8"), file.relative_to(relative_to).as_posix())
    return findings, files


@pytest.fixture(scope="module")
def package_scan() -> tuple[list[Finding], list[Path]]:
    return scan_tree(PACKAGE, REPO)


def test_package_has_no_unsafe_deserialization(package_scan):
    """Every hwnas module is free of unsafe loaders, but for the uses ALLOWED explains."""
    findings, _ = package_scan
    unexplained = [f for f in findings if (f.path, f.rule, f.scope) not in ALLOWED]
    assert not unexplained, "unsafe deserialization or code execution in hwnas:\n" + "\n".join(map(str, unexplained))


def test_allowlist_has_no_stale_entries(package_scan):
    """Each allowed use still exists: a removed use must take its licence with it."""
    findings, _ = package_scan
    seen = {(f.path, f.rule, f.scope) for f in findings}
    assert not set(ALLOWED) - seen, f"stale ALLOWED entries: {sorted(set(ALLOWED) - seen)}"


def test_scan_reads_every_module(package_scan):
    """The scan covers the whole package, subpackages included, and parses every file."""
    _, files = package_scan
    names = {f.relative_to(REPO).as_posix() for f in files}
    expected = {p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*.py")}
    assert names == expected and len(names) > 30
    # an independent count: every module the import system finds in the package was scanned
    import pkgutil

    importable = {m.name for m in pkgutil.walk_packages([str(PACKAGE)], "hwnas.")}
    scanned = {n.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for n in names}
    assert importable <= scanned and len(importable) > 30, sorted(importable - scanned)
    for must in ("hwnas/job/runner.py", "hwnas/export/candidate.py", "hwnas/hwmodels/lut.py", "hwnas/train/trainer.py",
                 "hwnas/job/store.py", "hwnas/report/data.py"):
        assert must in names


PLANTED = [
    ("import pickle\n", "import:pickle"),
    ("import cPickle as cp\n", "import:cPickle"),
    ("from dill import loads\n", "import:dill"),
    ("import marshal\n", "import:marshal"),
    ("import shelve\n", "import:shelve"),
    ("from ray import cloudpickle\n", "import:cloudpickle"),
    ("import importlib\nimportlib.import_module('pickle')\n", "import:pickle"),
    ("__import__('marshal')\n", "import:marshal"),
    ("eval('1 + 1')\n", "call:eval"),
    ("exec('x = 1')\n", "call:exec"),
    ("import builtins\nbuiltins.exec('x = 1')\n", "call:exec"),
    ("f = eval\n", "call:eval"),
    ("code = compile('x = 1', '<s>', 'exec')\n", "call:compile (exec/eval mode)"),
    ("code = compile(src, '<s>', mode=m)\n", "call:compile (exec/eval mode)"),
    ("import yaml\nyaml.load(open('c.yaml'))\n", "ref:yaml.load"),
    ("import yaml\nyaml.load(text, Loader=yaml.Loader)\n", "ref:yaml.Loader"),
    ("import yaml\nyaml.unsafe_load(text)\n", "ref:yaml.unsafe_load"),
    ("import yaml\nyaml.full_load(text)\n", "ref:yaml.full_load"),
    ("from yaml import UnsafeLoader\n", "ref:yaml.UnsafeLoader"),
    ("import yaml as y\ngetattr(y, 'unsafe_load')(text)\n", "ref:yaml.unsafe_load"),
    ("import torch\ntorch.load('ckpt.pt')\n", "call:torch.load without weights_only=True"),
    ("import torch\ntorch.load('ckpt.pt', weights_only=False)\n", "call:torch.load without weights_only=True"),
    ("from torch import load as tload\ntload(path, map_location='cpu')\n", "call:torch.load without weights_only=True"),
    ("import torch\ntorch.load(path, **options)\n", "call:torch.load without weights_only=True"),
    ("import torch\nloader = torch.load\n", "ref:torch.load (not called, so its safe keyword cannot be checked)"),
    ("import torch\nmodel = torch.jit.load(user_path)\n", "ref:torch.jit.load"),
    ("from torch.jit import load\nload(user_path)\n", "ref:torch.jit.load"),
    ("import numpy as np\nnp.load('a.npy', allow_pickle=True)\n", "call:numpy.load with allow_pickle"),
    ("from numpy import load\nload('a.npz', allow_pickle=flag)\n", "call:numpy.load with allow_pickle"),
    ("import pandas as pd\npd.read_pickle('frame.pkl')\n", "ref:pandas.read_pickle"),
    ("import joblib\nmodel = joblib.load('model.joblib')\n", "ref:joblib.load"),
    ("from joblib import load\n", "ref:joblib.load"),
]


@pytest.mark.parametrize("source, rule", PLANTED, ids=[r for _, r in PLANTED])
def test_scanner_catches_a_planted_pattern(tmp_path, source, rule):
    """Each pattern, planted in a module of a throwaway package, makes the package scan fail."""
    package = tmp_path / "victim"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "bad.py").write_text(f"def load_things(path, src, m, text, user_path, flag, options):\n"
                                            + "".join(f"    {line}\n" for line in source.splitlines()))
    findings, _ = scan_tree(package, tmp_path)
    assert [f.rule for f in findings if f.rule == rule], f"{rule!r} not caught in:\n{source}\n{findings}"
    assert all(f.path == "victim/sub/bad.py" and f.scope == "load_things" for f in findings)
    unexplained = [f for f in findings if (f.path, f.rule, f.scope) not in ALLOWED]
    assert unexplained  # what test_package_has_no_unsafe_deserialization would report


def test_scanner_passes_safe_code():
    """The safe spellings are not flagged: no false alarm for model.eval(), re.compile, safe_load..."""
    source = """
import re, json
import numpy as np
import torch
import yaml
from safetensors.torch import load_file

def ok(path, model, text):
    model.eval()
    re.compile(r"x+")
    yaml.safe_load(text)
    yaml.safe_dump({"a": 1})
    json.loads(text)
    torch.load(path, map_location="cpu", weights_only=True)
    np.load(path)
    np.load(path, allow_pickle=False)
    load_file(str(path))
    torch.jit.save(model, path)
"""
    assert scan_source(source, "ok.py") == []


# =====================================================================================================
# 2. Hostile files
# =====================================================================================================
class _Payload:
    """Unpickling this creates ``marker``: a stand-in for running any command."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def _evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"version": 1, "data": _Payload(marker)})


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    """A torch checkpoint in the genuine format whose model entry runs the payload when unpickled."""
    torch.save({"version": 1, "epoch": 0, "model": _Payload(marker), "optimizer": {}, "history": []}, path)
    return path


DEEP_JSON = "[" * 100_000 + "]" * 100_000
DEEP_YAML = "a: " + "[" * 5_000 + "]" * 5_000 + "\n"  # far past the recursion limit


def test_payloads_are_live(tmp_path):
    """Control: the hostile files really execute code under a naive loader, so refusals below mean something."""
    marker = tmp_path / "pickle-ran"
    pickle.loads(_evil_pickle(marker))
    assert marker.exists()
    marker2 = tmp_path / "torch-ran"
    torch.load(_evil_checkpoint(tmp_path / "ckpt.pt", marker2), weights_only=False)
    assert marker2.exists()


def _trainer(checkpoint: Path):
    from hwnas.config import TrainConfig
    from hwnas.train.trainer import SupernetTrainer

    return SupernetTrainer(torch.nn.Linear(2, 2), None, TrainConfig(), 0, torch.device("cpu"), 8, checkpoint)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # the raw pickle's protocol
def test_trainer_refuses_a_code_executing_checkpoint(tmp_path):
    """try_resume (torch.load with weights_only=True) refuses the payload, names the file, runs nothing."""
    marker = tmp_path / "pwned"
    ckpt = _evil_checkpoint(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(HwnasError, match="delete it to retrain") as info:
        _trainer(ckpt).try_resume()
    assert str(ckpt) in str(info.value)
    assert not marker.exists()
    # a raw pickle renamed to checkpoint.pt as well
    ckpt.write_bytes(_evil_pickle(marker))
    with pytest.raises(HwnasError) as info:
        _trainer(ckpt).try_resume()
    assert str(ckpt) in str(info.value) and not marker.exists()


def test_trainer_still_resumes_a_genuine_checkpoint(tmp_path):
    """Control: the refusal is not blanket."""
    ckpt = tmp_path / "checkpoint.pt"
    first = _trainer(ckpt)
    first.history = [{"loss": 1.0}]
    first.save_checkpoint(3)
    second = _trainer(ckpt)
    assert second.try_resume() and second.start_epoch == 4 and second.history == [{"loss": 1.0}]


def _components():
    from hwnas.train.components import Components

    return Components(config=None, data=None, space=None, supernet=torch.nn.Linear(2, 2),
                      compute=torch.device("cpu"))


def _safetensors_with_header(header: str) -> bytes:
    raw = header.encode()
    return struct.pack("<Q", len(raw)) + raw


@pytest.mark.parametrize("kind", ["pickle", "torch-checkpoint", "deep-header", "huge-header-length"])
def test_supernet_weights_refuse_hostile_files(tmp_path, kind):
    """Components.load_weights (the job's supernet.safetensors) reads safetensors only."""
    marker = tmp_path / "pwned"
    path = tmp_path / "supernet.safetensors"
    if kind == "pickle":
        path.write_bytes(_evil_pickle(marker))
    elif kind == "torch-checkpoint":
        _evil_checkpoint(path, marker)
    elif kind == "deep-header":
        path.write_bytes(_safetensors_with_header(DEEP_JSON))
    else:
        path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(HwnasError, match="unreadable") as info:
        _components().load_weights(path)
    assert str(path) in str(info.value) and not marker.exists()


def test_pretrained_timm_checkpoint_refuses_a_payload(tmp_path):
    """space.init.checkpoint (a timm checkpoint, .pt) is read with weights_only=True too."""
    pytest.importorskip("timm")
    from hwnas.spaces.pretrained import read_checkpoint

    marker = tmp_path / "pwned"
    ckpt = _evil_checkpoint(tmp_path / "vit.pt", marker)
    with pytest.raises(HwnasError, match="not a readable checkpoint") as info:
        read_checkpoint(ckpt)
    assert str(ckpt) in str(info.value) and not marker.exists()


LUT_HEADER = "kind,cin,h,w,cout,latency_ms,repeats,note\n"
HOSTILE_TABLES = {
    "pickle.csv": None,  # filled with the payload
    "pickle.json": None,
    "deep.json": DEEP_JSON,
    "formula-latency.csv": LUT_HEADER + "conv,3,8,8,8,\"=cmd|' /C calc'!A0\",5,\n",
    "formula-kind.csv": LUT_HEADER + "=cmd|' /C calc'!A0,3,8,8,8,0.1,5,\n",
    "formula-note.csv": LUT_HEADER + "conv,3,8,8,8,0.1,5,\"=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\"\n",
    "formula-note-plus.csv": LUT_HEADER + "conv,3,8,8,8,0.1,5,+cmd|calc\n",
    "formula-repeats.csv": LUT_HEADER + "conv,3,8,8,8,0.1,=1+1,\n",
    "formula-cell.json": json.dumps({"device": {}, "entries": [
        {"kind": "@SUM(1+1)*cmd|' /C calc'!A0", "cin": 3, "h": 8, "w": 8, "cout": 8, "latency_ms": 0.1}]}),
    "deep-meta.csv": LUT_HEADER + "conv,3,8,8,8,0.1,5,\n",  # its metadata JSON beside is the hostile part
}


@pytest.mark.parametrize("name", list(HOSTILE_TABLES))
def test_lookup_tables_refuse_hostile_files(tmp_path, name):
    """hwnas/hwmodels/lut.py (device.table, the profiler's cache, imported tables): a LookupTableError
    naming the file. Formula cells are refused because hwnas writes tables back out as CSV
    (the job's lut.csv), which people open in spreadsheets."""
    from hwnas.hwmodels.lut import LookupTable

    marker = tmp_path / "pwned"
    path = tmp_path / name
    content = HOSTILE_TABLES[name]
    path.write_bytes(_evil_pickle(marker) if content is None else content.encode())
    if name == "deep-meta.csv":
        path.with_suffix(".json").write_text(DEEP_JSON)
    with pytest.raises(LookupTableError) as info:
        LookupTable.load(path)
    assert path.stem in str(info.value) and not marker.exists()


def test_lookup_tables_still_read_ordinary_text(tmp_path):
    """Control: notes and kinds that merely contain '=' or '-' are kept."""
    from hwnas.hwmodels.lut import LookupTable

    path = tmp_path / "ok.csv"
    path.write_text(LUT_HEADER + "conv,3,8,8,8,0.1,5,high-spread a=b\n")
    table = LookupTable.load(path)
    assert [r["note"] for r in table.entries.values()] == ["high-spread a=b"]


@pytest.mark.parametrize("name", ["pickle.yaml", "tag.yaml", "deep.json", "deep.yaml", "pickle.csv"])
def test_table_imports_refuse_hostile_files(tmp_path, name):
    """hwnas import-table's readers (YAML / JSON / CSV mappings): safe_load only, errors not crashes."""
    from hwnas.hwmodels.table_formats import read_mapping

    marker = tmp_path / "pwned"
    path = tmp_path / name
    if name.startswith("pickle"):
        path.write_bytes(_evil_pickle(marker))
    elif name == "tag.yaml":
        path.write_text(f'!!python/object/apply:builtins.open ["{marker}", "w"]\n')
    else:
        path.write_text(DEEP_JSON if name.endswith(".json") else DEEP_YAML)
    with pytest.raises(LookupTableError) as info:
        read_mapping(path)
    assert str(path) in str(info.value) and not marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "formula", "missing-column"])
def test_sample_caches_refuse_hostile_files(tmp_path, kind):
    """The resumable sample caches (accuracy_samples.csv, latency_samples.csv) are refused with an
    HwnasError naming the file, before anything is measured."""
    from hwnas.job.checks import load_job_config as load_config
    from hwnas.job.runner import SearchJob
    from hwnas.utils.progress import Reporter
    from hwnas.spaces.dims import Arch

    marker = tmp_path / "pwned"
    path = tmp_path / "accuracy_samples.csv"
    arch = Arch.from_dict({"depth": 1})
    if kind == "pickle":
        path.write_bytes(_evil_pickle(marker))
    elif kind == "formula":
        path.write_text("arch,val_accuracy\nx,=cmd|' /C calc'!A0\n")
    else:
        path.write_text("x,y\n1,2\n")
    job = SearchJob(load_config(None), "t", None, tmp_path, torch.device("cpu"), Reporter())
    measured = []
    with pytest.raises(HwnasError, match="delete it") as info:
        job.measure_resumably([arch], path, "val_accuracy", measured.append, "sample")
    assert str(path) in str(info.value) and not measured and not marker.exists()


def test_sample_caches_still_resume(tmp_path):
    """Control: a genuine cache is used, nothing measured twice."""
    from hwnas.job.checks import load_job_config as load_config
    from hwnas.job.runner import SearchJob
    from hwnas.utils.progress import Reporter
    from hwnas.spaces.dims import Arch

    a, b = Arch.from_dict({"depth": 1}), Arch.from_dict({"depth": 2})
    path = tmp_path / "samples.csv"
    job = SearchJob(load_config(None), "t", None, tmp_path, torch.device("cpu"), Reporter())
    assert list(job.measure_resumably([a], path, "v", lambda arch: 0.5, "s")) == [0.5]
    measured = []
    out = job.measure_resumably([a, b], path, "v", lambda arch: measured.append(arch) or 0.25, "s")
    assert list(out) == [0.5, 0.25] and measured == [b]


@pytest.mark.parametrize("kind", ["tag", "deep"])
def test_configs_and_device_specs_refuse_hostile_yaml(tmp_path, kind):
    """Configs (and --set values) and device.spec roofline files use yaml.safe_load: a python tag is
    an error, absurd nesting too; neither runs anything."""
    from hwnas.config import parse_override
    from hwnas.job.checks import load_job_config as load_config
    from hwnas.hwmodels.roofline import RooflineModel

    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.yaml"
    path.write_text(f'!!python/object/apply:builtins.open ["{marker}", "w"]\n' if kind == "tag" else DEEP_YAML)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError) as info:
        RooflineModel.from_yaml(path)
    assert str(path) in str(info.value)
    text = path.read_text().strip()
    key, value = parse_override(f"seed={text}")  # a --set value YAML refuses stays an inert string
    assert key == ["seed"] and value == text
    assert not marker.exists()


def test_stored_architectures_refuse_deep_json():
    """Arch.from_json (candidate rows read back from a possibly shared store)."""
    from hwnas.spaces.dims import Arch

    with pytest.raises(ArchError, match="nested too deeply"):
        Arch.from_json(DEEP_JSON)


def test_cifar_batches_refuse_a_pickle_payload(tmp_path):
    """data.root with CIFAR-10 'python' batches: the restricted unpickler refuses any global but numpy's."""
    from hwnas.data import load_data

    marker = tmp_path / "pwned"
    for name in ("data_batch_1", "test_batch"):
        (tmp_path / name).write_bytes(_evil_pickle(marker))
    with pytest.raises(DataError, match=r"refusing to unpickle (io|builtins)\.open") as info:
        load_data("cifar10", root=tmp_path, image_size=None, val_fraction=0.2, test_fraction=0.2, split_seed=0)
    assert "data_batch_1" in str(info.value) and not marker.exists()


def _tiny_subnet_spec() -> dict:
    from hwnas.job.checks import load_job_config as load_config
    from hwnas.spaces.registry import build_space, space_entry
    from tests.conftest import TINY

    config = load_config(copy.deepcopy(TINY))
    space = build_space(config.space, (1, 8, 8), 10)
    supernet = space_entry("cnn").build_supernet(space)
    supernet.set_active(space.smallest())
    return supernet.spec


def _write_export(folder: Path, weights: bytes, spec: dict) -> Path:
    from hwnas.export.loading import MANIFEST_FORMAT

    folder.mkdir()
    (folder / "model.safetensors").write_bytes(weights)
    manifest = {"format": MANIFEST_FORMAT, "space": "cnn", "subnet": spec, "preprocessing": {"mean": [0.0], "std": [1.0]},
                "weights": {"file": "model.safetensors", "sha256": hashlib.sha256(weights).hexdigest()}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    record_digest(folder / "manifest.json")  # a crafted export vouches for itself
    return folder


def test_exports_refuse_hostile_files(tmp_path):
    """load_exported: a pickle manifest, and pickle or torch-checkpoint weights whose hash the manifest
    vouches for (a crafted export), are HwnasErrors; nothing runs."""
    from hwnas.export.loading import load_exported

    marker = tmp_path / "pwned"
    bad_manifest = tmp_path / "pickled-manifest"
    bad_manifest.mkdir()
    (bad_manifest / "manifest.json").write_bytes(_evil_pickle(marker))
    record_digest(bad_manifest / "manifest.json")
    with pytest.raises(HwnasError, match="not valid JSON"):
        load_exported(bad_manifest)
    spec = _tiny_subnet_spec()
    with pytest.raises(HwnasError, match="does not fit") as info:
        load_exported(_write_export(tmp_path / "pickled-weights", _evil_pickle(marker), spec))
    assert "model.safetensors" in str(info.value)
    checkpoint = _evil_checkpoint(tmp_path / "ckpt.pt", marker).read_bytes()
    with pytest.raises(HwnasError, match="does not fit"):
        load_exported(_write_export(tmp_path / "torch-weights", checkpoint, spec))
    assert not marker.exists()


def test_exports_refuse_a_deeply_nested_manifest(tmp_path):
    from hwnas.export.loading import load_exported

    (tmp_path / "manifest.json").write_text(DEEP_JSON)
    record_digest(tmp_path / "manifest.json")
    with pytest.raises(HwnasError, match="manifest.json"):
        load_exported(tmp_path)


@pytest.mark.parametrize("weights", [None, "model.safetensors", {"file": 3}, {"file": "../model.safetensors",
                                                                            "sha256": "0"},
                                     {"file": "/etc/passwd", "sha256": "0"}, {"file": "a/b", "sha256": "0"}],
                         ids=repr)
def test_exports_refuse_a_malformed_or_escaping_weights_entry(tmp_path, weights):
    import json

    from hwnas.export.loading import MANIFEST_FORMAT, load_exported

    manifest = {"format": MANIFEST_FORMAT, "space": "cnn", "subnet": {}, "weights": weights}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    record_digest(tmp_path / "manifest.json")
    with pytest.raises(HwnasError, match="manifest.json (lacks its weights entry|names weights)"):
        load_exported(tmp_path)


# =====================================================================================================
# 3. Paths
# =====================================================================================================
ESCAPING_NAMES = ["../escape", "..", "a/../../b", "/etc/passwd", "/tmp/x", "sub/dir", "a\\..\\b", "...", ".hidden",
                  "x/..", "ok..", "-rf", "", "name\n", "name\x00", "nl\nx", " lead", "x" * 101, "~root"]


@pytest.mark.parametrize("name", ESCAPING_NAMES, ids=repr)
def test_job_names_cannot_escape(name):
    from hwnas.job.paths import check_job_name

    with pytest.raises(JobError, match="job name"):
        check_job_name(name)


@pytest.mark.parametrize("name", ["digits-cnn", "run.1_a", "A", "x" * 100, "v1.2-rc.3"])
def test_accepted_job_names_stay_inside_the_workdir(tmp_path, name):
    """What check_job_name accepts is one path component: the job dir is a child of the workdir."""
    from hwnas.job.paths import JobPaths, check_job_name

    root = JobPaths(tmp_path / check_job_name(name)).root.resolve()
    assert root.parent == tmp_path.resolve() and root.name == name


def test_launch_refuses_an_escaping_name_before_touching_disk(tmp_path):
    """hwnas.launch (hwnas search --name): refused before the store or any folder is created."""
    from hwnas.job.launch import launch

    work = tmp_path / "w" / "runs"
    for name in ("../../escaped", str(tmp_path / "abs")):
        with pytest.raises(JobError):
            launch(None, name=name, workdir=work)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../x", "x/../../y", "/abs", "abc\n", ".."])
def test_config_names_cannot_escape(name):
    """The config's own ``name`` field is validated the same way (a ConfigError naming the field)."""
    from hwnas.job.checks import load_job_config as load_config

    with pytest.raises(ConfigError, match="^config: name"):
        load_config({"name": name})


def test_import_table_name_cannot_escape(tmp_path):
    """hwnas import-table --name writes <workdir>/devices/<name>.csv: a path-like name is refused."""
    from hwnas.cli.app import main

    source = tmp_path / "src.csv"
    source.write_text(LUT_HEADER + "conv,3,8,8,8,0.1,5,\n")
    work = tmp_path / "w"
    for name in ("../../evil", "/tmp/evil-hwnas-table"):
        assert main(["import-table", str(source), "--format", "hwnas", "--name", name, "--workdir", str(work),
                     "--quiet"]) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["src.csv"] and not Path("/tmp/evil-hwnas-table.csv").exists()


def test_device_names_are_names_but_device_tables_are_paths(tmp_path):
    """device.name looks up <workdir>/devices/<name>.csv: '../outside' must not read a table outside
    it. device.table, a path the user gives on purpose, may point anywhere (and is read safely)."""
    from hwnas.config import DeviceConfig
    from hwnas.hwmodels.devices import build_device

    outside = tmp_path / "outside.csv"
    outside.write_text(LUT_HEADER + "conv,3,8,8,8,0.1,5,\n")
    work = tmp_path / "a" / "runs"
    (work / "devices").mkdir(parents=True)
    for name in ("../../../outside", str(tmp_path / "outside")):
        with pytest.raises(ConfigError, match="unknown device"):
            build_device(DeviceConfig(name=name), work)
    assert build_device(DeviceConfig(name="outside", table=str(outside)), work).measures is False
    (work / "devices" / "mine.csv").write_text(outside.read_text())
    assert build_device(DeviceConfig(name="mine"), work).measures is False


def test_user_given_paths_are_taken_as_given(tmp_path):
    """workdir, data.root, device.table, device.spec and store are the user's to choose: absolute
    paths and '..' are kept verbatim (not confined, not rewritten) - hwnas reads them with the
    safe loaders tested above and writes only under workdir/<job name>."""
    from hwnas.job.checks import load_job_config as load_config

    values = {"workdir": str(tmp_path / ".." / "elsewhere"), "store": f"sqlite:///{tmp_path}/x.db",
              "data": {"root": "/srv/datasets/../cifar"}, "device": {"table": "/abs/t.csv"}}
    config = load_config(copy.deepcopy(values))
    assert (config.workdir, config.store, config.data.root, config.device.table) == (
        values["workdir"], values["store"], "/srv/datasets/../cifar", "/abs/t.csv")


# =====================================================================================================
# 4. The store URL's password
# =====================================================================================================
SECRET = "s3cret"
URL = f"postgresql+psycopg://user:{SECRET}@localhost:1/db"
HOSTILE_URLS = [
    URL,                                                        # server down
    f"postgresql+psycopg://user:{SECRET}@localhost:1/db?sslmode=bogus",
    f"mysql+nodriver://user:{SECRET}@localhost:1/db",            # driver missing
    f"postgresql+psycopg//user:{SECRET}@localhost:1/db",        # malformed: no ':' after the scheme
    f"postgresql+psycopg://user:{SECRET}@localhost:notaport/db",  # malformed port
    f"user:{SECRET}@localhost/db",                              # no scheme at all
]


def test_display_url_masks_the_password():
    from hwnas.job.store import display_url

    assert display_url(URL) == "postgresql+psycopg://user:***@localhost:1/db"


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_store_errors_hide_the_password(url, capsys, caplog):
    """Opening the store fails (no server, no driver, bad URL): the error a user sees through the
    CLI, and anything logged on the way, name the store without its password."""
    from hwnas.cli.app import main
    from hwnas.job.store import JobStore

    with pytest.raises(HwnasError) as info:
        JobStore(url)
    assert SECRET not in str(info.value) and "***" in str(info.value)
    with caplog.at_level(logging.DEBUG):
        for argv in (["jobs"], ["front", "some-job"], ["report", "some-job"]):
            assert main([*argv, "--store", url]) == 2
    out, err = capsys.readouterr()
    assert "error:" in err
    assert SECRET not in out + err + caplog.text


def test_the_job_records_the_store_masked(tmp_path):
    """A job whose config names a password-bearing store: its stored attributes (which the report,
    `hwnas report --json` and the export manifest are made from) and its config.yaml hold the
    masked URL only. The job runs in a SQLite store and stops at once (cifar10 without a root)."""
    import yaml

    from hwnas.job.checks import load_job_config as load_config
    from hwnas.job.runner import SearchJob
    from hwnas.utils.progress import Reporter
    from hwnas.job.store import JobStore

    config = load_config(None, [f"store={URL}", "data.dataset=cifar10"])
    store = JobStore(f"sqlite:///{tmp_path}/hwnas.db")
    with pytest.raises(DataError):
        SearchJob(config, "leak", store, tmp_path, torch.device("cpu"), Reporter()).run()
    attrs = store.open("leak").user_attrs
    assert attrs["config"]["store"] == "postgresql+psycopg://user:***@localhost:1/db"
    assert SECRET not in json.dumps(attrs)
    written = (tmp_path / "leak" / "config.yaml").read_text()
    assert SECRET not in written and yaml.safe_load(written)["store"].endswith(":***@localhost:1/db")
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leftovers == []


def test_only_the_store_module_reads_the_raw_url():
    """Statically: outside hwnas/job/store.py no code reads a ``.url`` attribute, so the CLI,
    report and export can only show ``JobStore.display`` (masked)."""
    readers = []
    for file in sorted(PACKAGE.rglob("*.py")):
        if file.relative_to(REPO).as_posix() == "hwnas/job/store.py":
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "url":
                readers.append(f"{file.relative_to(REPO)}:{node.lineno}")
    assert readers == []
