"""Bad inputs: a catalogue of malformed configs, ``--set`` overrides, lookup tables, architecture
JSON, export manifests and CLI arguments, and property-based tests of configs and architectures.

Every catalogue case must give one clear line naming the problem, the right exit code, no
traceback and no file left behind:

- a CLI case runs ``hwnas.cli.app.main(argv)`` in-process, in a fresh directory (the working directory
  too, so a default ``runs/`` would be caught); stderr must be exactly one line, ``error: ...``,
  matching the case's pattern, stdout empty, and the exit code the case's;
- an API case (architectures, export manifests: inputs that reach hwnas through Python or a job's
  files rather than a command line) must raise an :class:`~hwnas.errors.HwnasError` of the
  case's class whose one-line message matches, and whose ``exit_code`` is the one the CLI would
  use;
- for both, the directory holds exactly the input files the case wrote, before and after.

The catalogue stands on its own; tests/test_cli.py, tests/test_config.py, tests/test_tables.py
and tests/test_dims.py check some of the same inputs from their own angle.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwnas.cli.app import main
from hwnas.config import Config, default_config_text
from hwnas.job.checks import load_job_config as load_config
from hwnas.errors import ArchError, ConfigError, HwnasError
from hwnas.spaces.dims import Arch
from hwnas.spaces.registry import build_space
from hwnas.utils.io import digest_path, record_digest

DEFAULT = yaml.safe_load(default_config_text())

# =====================================================================================================
# Building the inputs
# =====================================================================================================


def tree(**changes: Any) -> dict:
    """The default config with ``changes`` (dotted keys, ``__`` for ``.``; ``space__stages__0__depth``)."""
    out = copy.deepcopy(DEFAULT)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node: Any = out
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return out


def write(tmp: Path, name: str, content: str | bytes | dict | list) -> Path:
    path = tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    elif name.endswith(".json"):
        path.write_text(json.dumps(content))
    else:
        path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def work(tmp: Path) -> list[str]:
    return ["--workdir", str(tmp / "w")]


def config_file(content: str | bytes | dict | list) -> Callable[[Path], list[str]]:
    """``hwnas search FILE`` on a config file with ``content``."""
    return lambda tmp: ["search", str(write(tmp, "bad.yaml", content)), *work(tmp)]


def search_with(*args: str) -> Callable[[Path], list[str]]:
    """``hwnas search`` on the embedded default config with ``args`` (``--set ...``, options)."""
    return lambda tmp: ["search", *args, *work(tmp)]


def command(*args: str) -> Callable[[Path], list[str]]:
    """Any command; ``{out}`` in an argument is replaced by a path in the case's directory."""
    return lambda tmp: [a.replace("{out}", str(tmp / "out")) for a in args] + (
        work(tmp) if args and args[0] not in ("frobnicate",) else [])


def table(fmt: str, name: str, content: str | bytes | dict | list) -> Callable[[Path], list[str]]:
    """``hwnas import-table FILE --format FMT`` on a table file ``name`` holding ``content``."""
    return lambda tmp: ["import-table", str(write(tmp, name, content)), "--format", fmt, "--name", "phone",
                        *work(tmp)]


HWNAS_HEADER = "kind,cin,h,w,cout,kernel,stride,groups,wbits,abits,latency_ms"


def hwnas_csv(*rows: str, header: str = HWNAS_HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


GOOD_ROW = "conv,8,8,8,16,3,1,1,8,8,0.25"
BITWIDTH_KEY = "(16, 32, 8, 1, 1, 0, 1)-W4A8"
OFA_BLOCK = "expanded_conv-input:16x16x16-output:16x16x16-expand:1-kernel:3-stride:1-idskip:1"


# -- architectures --------------------------------------------------------------------------------
_SPACE = None


def space():
    """The default config's CNN space on 8x8 single-channel inputs (built once; building is cheap)."""
    global _SPACE
    if _SPACE is None:
        _SPACE = build_space(load_config(None).space, (1, 8, 8), 10)
    return _SPACE


def arch_with(**changes: Any) -> dict:
    """The largest architecture as a dict, with ``changes`` (``__`` for ``.``; None deletes)."""
    values = space().largest().to_dict()
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del values[key]
        else:
            values[key] = value
    return values


def validate(values: Any) -> Callable[[Path], Callable[[], Any]]:
    return lambda tmp: lambda: space().validate(values)


def from_json(text: str) -> Callable[[Path], Callable[[], Any]]:
    return lambda tmp: lambda: space().validate(Arch.from_json(text))


def decode(x: list) -> Callable[[Path], Callable[[], Any]]:
    return lambda tmp: lambda: space().decode(x)


# -- export manifests -----------------------------------------------------------------------------
def export_dir(tmp: Path, change: Callable[[dict, Path], Any] | None = None) -> Path:
    """A real, loadable export of the tiny CNN (no training: fresh weights), then ``change``d:
    ``change(manifest, directory)`` edits the manifest in place (or returns text to write as
    manifest.json) and may alter the files."""
    from safetensors.torch import save_file

    from hwnas.export.loading import MANIFEST_FORMAT
    from hwnas.spaces.registry import space_entry
    from hwnas.utils.io import sha256_file
    from tests.conftest import TINY

    tiny = build_space(load_config(copy.deepcopy(TINY)).space, (1, 8, 8), 10)
    spec = tiny.subnet_spec(tiny.smallest())
    model = space_entry("cnn").build_standalone(spec)
    out = tmp / "export"
    out.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    manifest: Any = {"format": MANIFEST_FORMAT, "space": "cnn", "subnet": spec, "preprocessing": {"mean": [0.0], "std": [1.0]},
                     "weights": {"file": "model.safetensors", "sha256": sha256_file(out / "model.safetensors")}}
    if change is not None:
        replaced = change(manifest, out)
        manifest = manifest if replaced is None else replaced
    if manifest is not ...:  # ...: no manifest at all
        (out / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
        record_digest(out / "manifest.json")  # its digest agrees: the content itself is what is wrong
    return out


def manifest(change: Callable[[dict, Path], Any]) -> Callable[[Path], Callable[[], Any]]:
    def make(tmp: Path) -> Callable[[], Any]:
        from hwnas.export.loading import load_exported

        path = export_dir(tmp, change)
        return lambda: load_exported(path)
    return make


def damaged_manifest(damage: Callable[[Path], Any]) -> Callable[[Path], Callable[[], Any]]:
    """A whole export whose manifest (or its digest) is then ``damage``d on disk."""
    def make(tmp: Path) -> Callable[[], Any]:
        from hwnas.export.loading import load_exported

        path = export_dir(tmp)
        damage(path / "manifest.json")
        return lambda: load_exported(path)
    return make


def _set(key: str, value: Any) -> Callable[[dict, Path], None]:
    def change(m: dict, out: Path) -> None:
        m[key] = value
    return change


def _drop(key: str) -> Callable[[dict, Path], None]:
    return lambda m, out: m.pop(key) and None


def _wrong_tensors(m: dict, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from hwnas.utils.io import sha256_file

    save_file({"stem.conv.weight": torch.zeros(2, 2)}, str(out / "model.safetensors"))
    m["weights"]["sha256"] = sha256_file(out / "model.safetensors")


def _truncate_weights(m: dict, out: Path) -> None:
    data = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(data[: len(data) // 2])


# =====================================================================================================
# The catalogue
# =====================================================================================================


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], Any]  # tmp -> CLI argv (list), or a call (no arguments) that must raise
    code: int                    # exit code (the CLI's, or the error's exit_code)
    pattern: str                 # regex the one error line must match (re.search)
    error: type[HwnasError] = HwnasError  # for API cases: the class the error must be


CONFIG_FILE = r"bad\.yaml: "
CASES = [
    # -- configs (hwnas search CONFIG): validated before a file or directory is made ------------
    Case("config-not-yaml", config_file("name: [unclosed\n"), 2, CONFIG_FILE + r"not valid YAML at line \d"),
    Case("config-top-level-list", config_file(["a", "b"]), 2, CONFIG_FILE + "the top level must be a mapping"),
    Case("config-not-utf8", config_file(b"name: \xff\xfe\x00bad\n"), 2, r"cannot read config file '.*bad\.yaml'"),
    Case("config-missing-file", lambda tmp: ["search", str(tmp / "absent.yaml"), *work(tmp)], 2,
         r"config file '.*absent\.yaml' does not exist"),
    Case("config-unknown-top-key", config_file(tree(trian={"epochs": 1})), 2, CONFIG_FILE + "trian: unknown key"),
    Case("config-unknown-nested-key", config_file(tree(device__nmae="x")), 2, CONFIG_FILE + "device.nmae: unknown key"),
    Case("config-text-for-int", config_file(tree(train__epochs="eight")), 2,
         CONFIG_FILE + r"train\.epochs: Input should be a valid integer.*'eight'"),
    Case("config-bool-for-int", config_file(tree(train__epochs=True)), 2,
         CONFIG_FILE + r"train\.epochs: Input should be a number, not a boolean \(got True\)"),
    Case("config-list-for-int", config_file(tree(search__population=[64])), 2,
         CONFIG_FILE + r"search\.population: Input should be a valid integer"),
    Case("config-section-is-a-number", config_file(tree(train=5)), 2,
         CONFIG_FILE + r"train: Input should be a valid dictionary"),
    Case("config-empty-kernel-choices", config_file(tree(space__kernel_sizes=[])), 2,
         CONFIG_FILE + r"space\.kernel_sizes: List should have at least 1 item"),
    Case("config-empty-depth-choices", config_file(tree(space__stages__0__depth=[])), 2,
         CONFIG_FILE + r"space\.stages\.0\.depth: List should have at least 1 item"),
    Case("config-empty-objectives", config_file(tree(search__objectives=[])), 2,
         CONFIG_FILE + r"search\.objectives: List should have at least 2 items"),
    Case("config-negative-latency-budget", config_file(tree(search__max_latency_ms=-1)), 2,
         CONFIG_FILE + r"search\.max_latency_ms: Input should be greater than 0 \(got -1\)"),
    Case("config-nan-energy-budget", config_file("search:\n  max_energy_mj: .nan\n"), 2,
         CONFIG_FILE + r"search\.max_energy_mj: Input should be greater than 0 \(got nan\)"),
    Case("config-infinite-latency-budget", config_file("search:\n  max_latency_ms: .inf\n"), 2,
         CONFIG_FILE + r"search\.max_latency_ms: must be a finite number \(got inf\)"),
    Case("config-nan-learning-rate", config_file("train:\n  lr: .nan\n"), 2,
         CONFIG_FILE + r"train\.lr: Input should be less than or equal to 10 \(got nan\)"),
    Case("config-negative-evaluation-budget", config_file(tree(search__evaluate=-5)), 2,
         CONFIG_FILE + r"search\.evaluate: Input should be greater than or equal to 1 \(got -5\)"),
    Case("config-huge-seed", config_file(tree(seed=2**64)), 2,
         CONFIG_FILE + r"seed: Input should be less than or equal to 2147483647"),
    Case("config-split-seed-beyond-the-splitter", config_file(tree(data__split_seed=2**32)), 2,
         CONFIG_FILE + r"data\.split_seed: Input should be less than or equal to 4294967295"),
    Case("config-fractions-leave-no-training-data",
         config_file(tree(data__val_fraction=0.45, data__test_fraction=0.45)), 2,
         CONFIG_FILE + r"data\.val_fraction \+ data\.test_fraction must be below 0\.9"),
    Case("config-accuracy-floor-above-one", config_file(tree(search__min_accuracy=1.5)), 2,
         CONFIG_FILE + r"search\.min_accuracy: Input should be less than or equal to 1"),
    Case("config-unknown-space", config_file(tree(space__type="rnn")), 2,
         CONFIG_FILE + r"space\.type: unknown space 'rnn'"),
    Case("config-bit-width-not-offered", config_file(tree(space__weight_bits=[1, 8])), 2,
         CONFIG_FILE + r"space\.weight_bits\.0: Input should be 2, 3, 4, 5, 6, 7, 8 or 32 \(got 1\)"),
    Case("config-repeated-choices", config_file(tree(space__expand_ratios=[2, 2])), 2,
         CONFIG_FILE + r"space\.expand_ratios: expand ratios must be distinct"),
    Case("config-objectives-without-accuracy", config_file(tree(search__objectives=["latency", "energy"])), 2,
         CONFIG_FILE + r"search\.objectives: objectives must include accuracy"),
    Case("config-unknown-algorithm", config_file(tree(search__algorithm="nsga9")), 2,
         CONFIG_FILE + r"search\.algorithm: unknown algorithm 'nsga9'; known: .*nsga2"),
    Case("config-unknown-predictor", config_file(tree(predictor__model="xgboost")), 2,
         CONFIG_FILE + r"predictor\.model: unknown model 'xgboost'; known: .*ensemble"),
    Case("config-unknown-dataset", config_file(tree(data__dataset="mnist")), 2,
         CONFIG_FILE + r"data\.dataset: unknown dataset 'mnist'; known: .*digits"),
    Case("config-unknown-energy-model", config_file(tree(device__energy_model="7nm")), 2,
         CONFIG_FILE + r"device\.energy_model: unknown energy model '7nm'"),
    Case("config-job-name-escapes", config_file(tree(name="../escape")), 2,
         CONFIG_FILE + r"name: String should match pattern"),
    # -- --set overrides: the same validation as the file's ---------------------------------------
    Case("set-without-equals", search_with("--set", "train.epochs"), 2, r"--set 'train\.epochs': expected key=value"),
    Case("set-empty-key-part", search_with("--set", "train..epochs=1"), 2, r"--set 'train\.\.epochs=1': empty key"),
    Case("set-into-a-number", search_with("--set", "train.epochs.x=1"), 2,
         r"--set train\.epochs\.x: train\.epochs is not a section"),
    Case("set-list-index-out-of-range", search_with("--set", "space.stages.7.depth=[1]"), 2,
         r"--set space\.stages\.7\.depth: '7' is not an index of a list of 3"),
    Case("set-unknown-key", search_with("--set", "predictor.nope=1"), 2, r"--set predictor\.nope=1: predictor\.nope: unknown key"),
    Case("set-below-minimum", search_with("--set", "device.repeats=2"), 2,
         r"--set device\.repeats=2: device\.repeats: Input should be greater than or equal to 3 \(got 2\)"),
    Case("set-nan-as-text", search_with("--set", "train.lr=nan"), 2,
         r"--set train\.lr=nan: train\.lr: Input should be .* \(got 'nan'\)"),
    Case("set-bool-in-a-space-list", search_with("--set", "space.expand_ratios=[true,2]"), 2,
         r"space\.expand_ratios: Input should be a number, not a boolean"),
    Case("set-bool-for-a-stride", search_with("--set", "space.stages.0.stride=true"), 2,
         r"space\.stages\.0\.stride: Input should be a number, not a boolean"),
    Case("set-unknown-device", search_with("--set", "device.name=nope"), 2,
         r"device\.name: unknown device 'nope'; known: \["),
    Case("set-objective-on-a-measured-device",
         search_with("--set", "search.objectives=[accuracy,latency,energy@local-cpu]"), 2,
         r"search\.objectives: local-cpu is a measured device"),
    Case("set-bool-for-float", search_with("--set", "train.weight_decay=true"), 2,
         r"--set train\.weight_decay=true: train\.weight_decay: Input should be a number, not a boolean"),
    # -- CLI arguments out of range, unknown commands and options ----------------------------------
    Case("cli-negative-seed", search_with("--seed", "-1"), 2, r"Invalid value for '--seed'.*greater than or equal to 0"),
    Case("cli-seed-beyond-config-range", search_with("--seed", "3000000000"), 2,
         r"seed: Input should be less than or equal to 2147483647"),
    Case("cli-zero-workers", search_with("--workers", "0"), 2, r"Invalid value for '--workers'.*greater than or equal to 1"),
    Case("cli-too-many-workers", search_with("--workers", "5000"), 2, r"workers: Input should be less than or equal to 1024"),
    Case("cli-unknown-compute", search_with("--compute", "tpu"), 2, r"Invalid value for '--compute'.*'tpu'"),
    Case("cli-unknown-option", search_with("--epochs", "3"), 2, r"No such option: --epochs"),
    Case("cli-unknown-command", command("frobnicate"), 2, r"No such command 'frobnicate'"),
    Case("cli-resume-with-overrides", search_with("--resume", "old", "--set", "train.epochs=1"), 2,
         r"--resume takes the job's stored config"),
    Case("cli-job-name-escapes", search_with("--name", "../escape"), 2, r"job name '\.\./escape' must be"),
    Case("cli-nan-latency-budget", command("front", "job", "--max-latency-ms", "nan"), 2,
         r"--max-latency-ms must be a number above 0, got nan"),
    Case("cli-infinite-latency-budget", command("front", "job", "--max-latency-ms", "inf"), 2,
         r"--max-latency-ms must be a number above 0, got inf"),
    Case("cli-negative-energy-budget", command("front", "job", "--max-energy-mj", "-1"), 2,
         r"--max-energy-mj must be a number above 0, got -1"),
    Case("cli-accuracy-floor-above-one", command("front", "job", "--min-accuracy", "2"), 2,
         r"--min-accuracy must be a number above 0 and at most 1(\.0)?, got 2"),
    Case("cli-budget-not-a-number", command("front", "job", "--max-latency-ms", "fast"), 2,
         r"Invalid value for '--max-latency-ms': Input should be a valid number"),
    Case("cli-json-and-csv", command("front", "job", "--json", "--format", "csv"), 2,
         r"--json and --format csv conflict"),
    Case("cli-negative-candidate", command("export", "job", "--candidate", "-1", "--out", "{out}"), 2,
         r"Invalid value for '--candidate'.*greater than or equal to 0"),
    Case("cli-nan-budget-beside-a-candidate",
         command("export", "job", "--candidate", "0", "--min-accuracy", "nan", "--out", "{out}"), 2,
         r"--min-accuracy must be a number above 0 and at most 1(\.0)?, got nan"),
    Case("cli-unknown-export-format", command("export", "job", "--candidate", "0", "--format", "pt,tflite",
                                              "--out", "{out}"), 2, r"--format: unknown format 'tflite'"),
    Case("cli-negative-finetune-epochs", command("export", "job", "--candidate", "0", "--finetune-epochs", "-2",
                                                 "--out", "{out}"), 2, r"Invalid value for '--finetune-epochs'"),
    Case("cli-report-nan-budget", command("report", "job", "--out", "{out}", "--max-energy-mj", "nan"), 2,
         r"--max-energy-mj must be a number above 0, got nan"),
    Case("cli-import-zero-threads", command("import-table", "t.yaml", "--format", "ofa", "--name", "p",
                                            "--threads", "0"), 2, r"Invalid value for '--threads'"),
    Case("cli-import-without-name", command("import-table", "t.yaml", "--format", "ofa"), 2,
         r"Missing option '--name'"),
    Case("cli-import-unknown-format", command("import-table", "t.yaml", "--format", "tflite", "--name", "p"), 2,
         r"Invalid value for '--format'.*'tflite'"),
    # -- lookup tables (hwnas import-table) ---------------------------------------------------------
    Case("table-missing-file", lambda tmp: ["import-table", str(tmp / "absent.csv"), "--format", "hwnas",
                                            "--name", "phone", *work(tmp)], 2, r"lookup table .*absent\.csv does not exist"),
    Case("table-missing-latency-column", table("hwnas", "t.csv", hwnas_csv("conv,8", header="kind,cin")), 2,
         r"lookup table .*t\.csv lacks column 'latency_ms'"),
    Case("table-missing-kind-column", table("hwnas", "t.csv", "cin,latency_ms\n8,0.1\n"), 2,
         r"lookup table .*t\.csv lacks column 'kind'"),
    Case("table-duplicate-rows", table("hwnas", "t.csv", hwnas_csv(GOOD_ROW, GOOD_ROW)), 2,
         r"t\.csv line 3: duplicate entry conv-"),
    Case("table-negative-latency", table("hwnas", "t.csv", hwnas_csv("conv,8,8,8,16,3,1,1,8,8,-0.5")), 2,
         r"t\.csv line 2: latency_ms -0\.5 is not a non-negative number"),
    Case("table-text-latency", table("hwnas", "t.csv", hwnas_csv("conv,8,8,8,16,3,1,1,8,8,fast")), 2,
         r"t\.csv line 2: latency_ms 'fast' is not a non-negative number"),
    Case("table-nan-latency", table("hwnas", "t.csv", hwnas_csv(GOOD_ROW, "conv,8,8,8,32,3,1,1,8,8,nan")), 2,
         r"t\.csv line 3: latency_ms 'nan' is not a non-negative number"),
    Case("table-text-channels", table("hwnas", "t.csv", hwnas_csv("conv,eight,8,8,16,3,1,1,8,8,0.2")), 2,
         r"t\.csv line 2: cin 'eight' is not a valid value"),
    Case("table-fractional-kernel", table("hwnas", "t.csv", hwnas_csv("conv,8,8,8,16,2.5,1,1,8,8,0.2")), 2,
         r"t\.csv line 2: kernel 2\.5 is not a valid value"),
    Case("table-formula-cell", table("hwnas", "t.csv", hwnas_csv("=HYPERLINK(1),8,8,8,16,3,1,1,8,8,0.2")), 2,
         r"t\.csv line 2: kind '=HYPERLINK\(1\)' looks like a spreadsheet formula; refused"),
    Case("table-empty-file", table("hwnas", "t.csv", ""), 2, r"lookup table .*t\.csv is unreadable"),
    Case("table-json-wrong-shape", table("hwnas", "t.json", {"entries": {"conv": 0.1}}), 2,
         r"lookup table .*t\.json: expected \{\"device\": \{\.\.\.\}, \"entries\": \[rows\]\}"),
    Case("table-ofa-bad-key", table("ofa", "t.yaml", {"conv3x3": 0.1}), 2, r"entry 'conv3x3' is not an OFA-style key"),
    Case("table-ofa-text-latency", table("ofa", "t.yaml", {OFA_BLOCK: "fast"}), 2,
         r"entry '.*idskip:1': expected a latency in ms or a mapping, got 'fast'"),
    Case("table-ofa-repeated-key", table("ofa", "t.yaml", f"'{OFA_BLOCK}': 0.1\n'{OFA_BLOCK}': 0.2\n"), 2,
         r"table .*t\.yaml: key '.*idskip:1' appears twice"),
    Case("table-ofa-negative-latency", table("ofa", "t.yaml", {OFA_BLOCK: {"mean": -1, "std": 0.1}}), 2,
         r"entry '.*idskip:1': latency_ms -1 is not a non-negative number"),
    Case("table-ofa-not-a-mapping", table("ofa", "t.yaml", [OFA_BLOCK]), 2,
         r"table .*t\.yaml: expected a mapping of keys to latencies"),
    Case("table-bitwidth-bad-padding", table("bitwidth", "t.json", {"(16, 32, 8, 3, 1, 0, 1)-W4A8": 0.1}), 2,
         r"padding 0 with kernel 3; hwnas convolutions pad kernel // 2"),
    Case("table-bitwidth-repeated-csv-key", table("bitwidth", "t.csv", f'key,latency_ms\n"{BITWIDTH_KEY}",0.1\n'
                                                                       f'"{BITWIDTH_KEY}",0.2\n'), 2,
         r"table .*t\.csv: key '\(16, 32, 8, 1, 1, 0, 1\)-W4A8' appears twice"),
    Case("table-bitwidth-two-spellings-of-one-op",
         table("bitwidth", "t.json", {BITWIDTH_KEY: 0.1, BITWIDTH_KEY.replace(", ", ","): 0.2}), 2,
         r"entry '\(16,32,8,1,1,0,1\)-W4A8' describes the same op as an earlier entry"),
    Case("table-bitwidth-negative-energy",
         table("bitwidth", "t.json", {BITWIDTH_KEY: {"latency_ms": 0.1, "energy_mj": -2e-5}}), 2,
         r"energy_mj -2e-05 is not a non-negative number"),
    # -- architecture JSON and encodings (Python API: space.validate, Arch.from_json, decode) ----
    Case("arch-not-json", from_json("{s0.depth: 1}"), 2, r"architecture is not valid JSON", ArchError),
    Case("arch-json-array", from_json("[1, 2, 3]"), 2, r"architecture JSON must be an object", ArchError),
    Case("arch-json-repeated-dimension", from_json('{"s0.depth": 1, "s0.depth": 3}'), 2,
         r"architecture JSON gives dimension 's0\.depth' twice", ArchError),
    Case("arch-unknown-dimension", validate(arch_with(s9__depth=1)), 2, r"unknown dimension 's9\.depth' for space 'cnn'",
         ArchError),
    Case("arch-missing-dimension", validate(arch_with(s1__b0__kernel=None)), 2,
         r"architecture lacks dimension 's1\.b0\.kernel'", ArchError),
    Case("arch-value-out-of-range", validate(arch_with(s0__b0__expand=5)), 2,
         r"s0\.b0\.expand=5 is not one of its choices \[2, 4, 6\]", ArchError),
    Case("arch-text-for-number", validate(arch_with(s0__b0__kernel="3")), 2,
         r"s0\.b0\.kernel='3' is not one of its choices \[3, 5, 7\]", ArchError),
    Case("arch-bool-for-depth", validate(arch_with(s0__depth=True)), 2,
         r"s0\.depth=True is not one of its choices \[1, 2, 3\]", ArchError),
    Case("arch-nan-bits", validate(arch_with(s2__b0__wbits=math.nan)), 2,
         r"s2\.b0\.wbits=nan is not one of its choices", ArchError),
    Case("arch-not-a-mapping", validate([["s0.depth", 1]]), 2, r"an architecture is a mapping of dimension: value",
         ArchError),
    Case("encoding-out-of-range", lambda tmp: lambda: space().decode([0] * (len(space()) - 1) + [7]), 2,
         r"index 7 out of range for s2\.b2\.(abits|wbits) \(3 choices\)", ArchError),
    Case("encoding-nan-index", lambda tmp: lambda: space().decode([math.nan] * len(space())), 2,
         r"encoding must be a list of choice indices, got \[nan", ArchError),
    Case("encoding-wrong-length", decode([0, 1, 2]), 2, r"encoding has 3 entries, space 'cnn' has \d+", ArchError),
    # -- export manifests (hwnas.load_exported) -----------------------------------------------------
    Case("manifest-absent", manifest(lambda m, out: ...), 2, r"manifest\.json does not exist: not an hwnas export"),
    Case("manifest-not-json", manifest(lambda m, out: "{format: 1"), 2, r"manifest\.json is not valid JSON"),
    Case("manifest-older-version", manifest(_set("format", "hwnas-export/0")), 2,
         r"manifest\.json has format 'hwnas-export/0'; this hwnas reads 'hwnas-export/2'"),
    Case("manifest-newer-version", manifest(_set("format", "hwnas-export/3")), 2,
         r"manifest\.json has format 'hwnas-export/3'; this hwnas reads 'hwnas-export/2'"),
    Case("manifest-without-format", manifest(_drop("format")), 2, r"manifest\.json has format None"),
    Case("manifest-without-subnet", manifest(_drop("subnet")), 2,
         r"manifest\.json lacks its weights entry \(file and sha256\), space or subnet"),
    Case("manifest-weights-outside", manifest(lambda m, out: m["weights"].update(file="../model.safetensors")), 2,
         r"manifest\.json names weights '\.\./model\.safetensors' outside its export directory"),
    Case("manifest-truncated-weights", manifest(_truncate_weights), 2,
         r"model\.safetensors does not match the hash in its manifest"),
    Case("manifest-unknown-space", manifest(_set("space", "rnn")), 2, r"unknown space 'rnn'"),
    Case("manifest-without-preprocessing", manifest(_drop("preprocessing")), 2,
         r"manifest\.json lacks its preprocessing entry \(per-channel mean, and std > 0\)"),
    Case("manifest-zero-std", manifest(_set("preprocessing", {"mean": [0.5], "std": [0.0]})), 2,
         r"manifest\.json lacks its preprocessing entry"),
    Case("manifest-std-for-other-channels", manifest(_set("preprocessing", {"mean": [0.5], "std": [1.0, 1.0]})), 2,
         r"manifest\.json lacks its preprocessing entry"),
    Case("manifest-unbuildable-subnet", manifest(_set("subnet", {"type": "cnn"})), 2,
         r"manifest\.json has a subnet this hwnas cannot build"),
    Case("manifest-weights-do-not-fit", manifest(_wrong_tensors), 2,
         r"model\.safetensors does not fit the manifest's subnet"),
    Case("manifest-altered-after-export", damaged_manifest(lambda m: m.write_text(m.read_text().replace("cnn", "vit"))),
         2, r"export manifest .*manifest\.json does not match the sha256 digest recorded when it was written"),
    Case("manifest-truncated", damaged_manifest(lambda m: m.write_bytes(m.read_bytes()[:40])), 2,
         r"export manifest .*manifest\.json does not match the sha256 digest"),
    Case("manifest-digest-removed", damaged_manifest(lambda m: digest_path(m).unlink()), 2,
         r"export manifest .*manifest\.json has no recorded sha256 digest"),
]


def _snapshot(root: Path) -> dict[str, int]:
    """Every path under ``root`` (files with their size, directories with -1)."""
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1) for p in sorted(root.rglob("*"))}


def test_the_catalogue_is_large_and_its_ids_distinct():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 40
    kinds = {c.id.split("-")[0] for c in CASES}
    assert kinds == {"config", "set", "cli", "table", "arch", "encoding", "manifest"}


def judge(case: Case, tmp_path: Path) -> list[str]:
    """How ``case`` fell short of being refused well: [] when it gave one ``error:`` line (or one
    HwnasError of the right class) matching its pattern, its exit code, no traceback and no file
    left behind. Shared with ``experiments/bench_reliability.py``, which counts these."""
    import hwnas.job.runner

    def reached(self):  # a config problem found only while the job runs is found too late (and slowly)
        raise AssertionError("the bad input reached the search job")

    problems: list[str] = []
    real_run, cwd = hwnas.job.runner.SearchJob.run, os.getcwd()
    hwnas.job.runner.SearchJob.run = reached
    os.chdir(tmp_path)  # a default workdir ("runs") would land here, and be seen
    try:
        made = case.make(tmp_path)
        before = _snapshot(tmp_path)
        out_buf, err_buf = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out_buf), contextlib.redirect_stderr(err_buf):
            if isinstance(made, list):
                code = main(made)
            else:
                try:
                    made()
                    code = 0
                except HwnasError as exc:
                    code, err_buf = exc.exit_code, None
                    if not isinstance(exc, case.error):
                        problems.append(f"raised {type(exc).__name__}, expected {case.error.__name__}")
                    line = str(exc)
                    if "\n" in line or not line.strip():
                        problems.append(f"not one line: {line!r}")
        out = out_buf.getvalue()
        if err_buf is not None:
            err = err_buf.getvalue()
            lines = err.splitlines()
            if isinstance(made, list):
                if len(lines) != 1 or not err.endswith("\n"):
                    problems.append(f"expected one line on stderr, got {err!r}")
                if out:
                    problems.append(f"stdout should be empty on an error, got {out!r}")
            else:
                problems.append("accepted: no error raised")
            line = lines[0] if lines else ""
            if isinstance(made, list) and not line.startswith("error: "):
                problems.append(f"{line!r} does not start with 'error: '")
        if "Traceback" in out + (err_buf.getvalue() if err_buf is not None else ""):
            problems.append("a traceback was printed")
        if not re.search(case.pattern, line):
            problems.append(f"{line!r} does not match {case.pattern!r}")
        if code != case.code:
            problems.append(f"exit code {code}, expected {case.code}: {line!r}")
        if _snapshot(tmp_path) != before:
            problems.append("files were left behind")
    finally:
        hwnas.job.runner.SearchJob.run = real_run
        os.chdir(cwd)
    return problems


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_line(case: Case, tmp_path: Path):
    assert judge(case, tmp_path) == []


def test_the_manifest_fixture_itself_loads(tmp_path):
    """The manifest cases alter one thing each of an export that loads as it is."""
    from hwnas.export.loading import load_exported

    model = load_exported(export_dir(tmp_path))
    import torch

    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_bad_tables_left_the_good_ones_importable(tmp_path, capsys):
    """The table cases differ from a table that imports by the one fault they name."""
    w = str(tmp_path / "w")
    for fmt, name, content in [("hwnas", "t.csv", hwnas_csv(GOOD_ROW, "conv,8,8,8,32,3,1,1,8,8,0.3")),
                               ("ofa", "t.yaml", {OFA_BLOCK: 0.1}),
                               ("bitwidth", "t.csv", f'key,latency_ms\n"{BITWIDTH_KEY}",0.1\n')]:
        src = write(tmp_path, name, content)
        assert main(["import-table", str(src), "--format", fmt, "--name", f"ok-{fmt}", "--workdir", w, "-q"]) == 0
    assert "error" not in capsys.readouterr().err


# =====================================================================================================
# Property-based: configs
# =====================================================================================================


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of the default tree (list items by index), sections included."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


CONFIG_PATHS = _paths(DEFAULT)

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-5, 70), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 0.5, 1e308]),
    st.text(max_size=6),
    st.sampled_from(["cnn", "vit", "mult", "shift", "nsga2", "ensemble", "digits", "accuracy", "latency", "nan",
                     "true", "-1", "1e9", "local-cpu", "../x"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["type", "depth", "channels", "stride", "epochs", "x", ""]) | st.text(max_size=4), inner,
    max_size=3), max_leaves=6) | st.just([]) | st.just({})


def _at(path: tuple) -> Any:
    node: Any = DEFAULT
    for part in path:
        node = node[part]
    return node


def plausible(default: Any) -> st.SearchStrategy:
    """Values of the default's own type, near its range: about half of them valid."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(-2, 2 * default + 10)
    if isinstance(default, float):
        return st.floats(-0.1, 2 * default + 1, allow_nan=False)
    if isinstance(default, str):
        return st.sampled_from([default, default.upper(), default + "-x", "cnn", "vit", "nsga3", "random", "ridge",
                                "cifar10", "cpu", "latency", "energy", "params", "local-cpu-torchscript", "a.b"])
    if isinstance(default, list) and default and all(isinstance(v, str) for v in default):
        return st.lists(st.sampled_from([*default, "mult", "shift", "adder", "accuracy", "latency", "energy",
                                         "flops", "bitops", "params"]), max_size=4)
    if isinstance(default, list) and default and all(isinstance(v, (int, float)) for v in default):
        return st.lists(st.sampled_from([*default, 0, 1, 2, 3, 5, 7, 8, 32, 0.5, 0.25]), max_size=4)
    if default is None:
        return st.one_of(st.none(), st.floats(0.01, 10), st.integers(1, 64), st.sampled_from(["", "x"]))
    return values


@st.composite
def mutations(draw) -> list[tuple[tuple, Any]]:
    """1-3 (path, value) changes: an existing key (a value of any type, or of the key's own),
    or a new key under an existing section."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(CONFIG_PATHS))
        kind = draw(st.sampled_from(["plausible", "plausible", "any", "new key"]))
        if kind == "new key":
            path = path[:-1] + (draw(st.sampled_from(["nope", "epoch", "types", "Name"])),)
        out.append((path, draw(plausible(_at(path)) if kind == "plausible" else values)))
    return out


def _apply(tree_: dict, path: tuple, value: Any) -> bool:
    """Set ``path`` in ``tree_``; False where an earlier change removed the way there."""
    node: Any = tree_
    for part in path[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return False
    last = path[-1]
    if isinstance(node, dict):
        node[last] = copy.deepcopy(value)
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = copy.deepcopy(value)
    else:
        return False
    return True


LOC = re.compile(r"^config: ([A-Za-z_][\w]*(?:\.[\w@-]+)*)")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_any_config_tree_is_accepted_and_round_trips_or_refused_naming_a_key(changes):
    raw = copy.deepcopy(DEFAULT)
    applied = [path for path, value in changes if _apply(raw, path, value)]
    try:
        cfg = load_config(raw)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("config: "), message
        match = LOC.match(message)
        assert match, f"the message names no key: {message!r}"
        named = match.group(1).split(".")
        # the key named is on the way to (or under) a changed one; a space of another type
        # (space.type changed) names its own first bad key; the fractions check names both
        related = any(str(p[0]) == named[0] for p in applied)
        assert related, f"{message!r} names none of the changed keys {applied}"
        return
    assert Config.model_validate(cfg.model_dump()) == cfg
    again = load_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False)))
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    for number in _numbers(cfg.to_dict()):
        assert math.isfinite(number), cfg.to_dict()


def _numbers(node: Any):
    if isinstance(node, dict):
        for v in node.values():
            yield from _numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _numbers(v)
    elif isinstance(node, float):
        yield node


# =====================================================================================================
# Property-based: architectures and encodings
# =====================================================================================================

arch_values = st.one_of(
    st.integers(-3, 40), st.booleans(), st.none(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([3.0, 4.0, 32.0, "3", "mult", "", [3], {"k": 3}, math.nan]),
    st.text(max_size=3),
)


@st.composite
def arch_dicts(draw) -> dict:
    sp = space()
    values = {d.name: d.choices[draw(st.integers(0, len(d.choices) - 1))] for d in sp.dims}
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["set", "choice", "delete", "extra"]))
        name = draw(st.sampled_from(sp.names))
        if action == "set":
            values[name] = draw(arch_values)
        elif action == "choice":  # another valid value, possibly of an inactive block
            values[name] = draw(st.sampled_from(sp.dim(name).choices))
        elif action == "delete":
            values.pop(name, None)
        else:
            values[draw(st.sampled_from(["s3.depth", "s0.b9.kernel", "depth", name + "x"]))] = draw(arch_values)
    return values


def _check_accepted(arch: Arch) -> None:
    sp = space()
    assert sp.decode(sp.encode(arch)) == arch
    text = arch.to_json()
    assert Arch.from_json(text) == arch and Arch.from_json(text).to_json() == text
    assert sp.validate(Arch.from_json(text)) == arch and sp.validate(arch).to_json() == text
    for d in sp.dims:  # the value is the choice itself, of its type: the JSON is canonical
        value = arch[d.name]
        assert type(value) is type(d.choices[d.index(value)])


@settings(max_examples=300, deadline=None)
@given(arch_dicts())
def test_any_arch_dict_is_accepted_and_round_trips_or_refused_in_one_line(values):
    sp = space()
    for attempt in (lambda: sp.validate(values), lambda: sp.validate(Arch.from_json(json.dumps(values)))):
        try:
            arch = attempt()
        except HwnasError as exc:
            assert isinstance(exc, ArchError), type(exc)
            message = str(exc)
            assert "\n" not in message and message, message
            assert any(k in message for k in values) or "lacks dimension" in message, message
            continue
        _check_accepted(arch)


encodings = st.one_of(
    st.lists(st.integers(-2, 4), min_size=len(space()), max_size=len(space())),
    st.lists(st.floats(-1, 4, allow_nan=False), min_size=len(space()), max_size=len(space())),
    st.lists(st.one_of(st.integers(-2, 4), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=2),
                       st.none()), min_size=0, max_size=len(space()) + 2),
)


@settings(max_examples=300, deadline=None)
@given(encodings)
def test_any_encoding_decodes_to_a_valid_arch_or_is_refused_in_one_line(x):
    sp = space()
    try:
        arch = sp.decode(x)
    except HwnasError as exc:
        assert isinstance(exc, ArchError)
        assert "\n" not in str(exc) and str(exc)
        return
    assert sp.validate(arch.to_dict()) == arch
    _check_accepted(arch)
