"""The space contract: a space defined in the tests folder (tests/mlp_space.py), registered without
touching any file of hwnas/, runs the real CLI end to end: search -> front -> export -> load."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

import hwnas
from hwnas.cli.app import main
from hwnas.errors import ConfigError
from hwnas.spaces.registry import SPACES, block_graph, int8_ineligible_reason, op_graph

from . import mlp_space

TREE = {
    "name": "mlp", "seed": 0,
    "space": {"type": mlp_space.NAME, "depths": [1, 2], "widths": [16, 32]},
    "train": {"epochs": 2, "subnets_per_step": 3, "recalibration_samples": 128},
    "device": {"name": "edge-accel-45nm"},
    "predictor": {"samples": 12, "model": "ensemble"},
    "search": {"population": 8, "generations": 2, "evaluate": 4, "batch": 2},
}


def test_a_space_from_outside_hwnas_runs_search_front_and_export(tmp_path, capsys):
    config, work, out = tmp_path / "mlp.yaml", tmp_path / "w", tmp_path / "exported"
    config.write_text(yaml.safe_dump(TREE))
    w = ["--workdir", str(work)]
    assert main(["search", str(config), *w, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["front", "mlp", *w, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(set(row["arch"]) == {"depth", "l0.width", "l1.width"} for row in rows)
    job = hwnas.open_job("mlp", workdir=work)
    assert job.attrs["space"] == mlp_space.NAME and job.status == "done"
    space = job.space()
    assert isinstance(space, mlp_space.MLPSpace)

    assert main(["export", "mlp", "--candidate", str(rows[0]["id"]), "--out", str(out), *w, "--json"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["space"] == mlp_space.NAME and manifest["checks"]["pt"]["passed"]
    model = hwnas.load_exported(out)
    assert isinstance(model.network, mlp_space.StandaloneMLP)
    widths = [layer["cout"] for layer in manifest["subnet"]["layers"]]
    assert [layer.out_features for layer in model.network.hidden] == widths
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    # The costed network is the exported one: its op graph counts the exported module's weights.
    params = sum(op.params for op in op_graph(manifest["subnet"]))
    assert params == sum(p.numel() for p in model.parameters())


def test_hooks_a_space_leaves_out_are_refused_by_name():
    spec = {"type": mlp_space.NAME, "layers": [], "classifier": {"cin": 64, "num_classes": 10},
            "num_classes": 10, "input_shape": [1, 8, 8]}
    assert int8_ineligible_reason(spec) == f"the int8 export does not cover the {mlp_space.NAME} space"
    with pytest.raises(ValueError, match=f"block-granularity tables do not cover the '{mlp_space.NAME}' space"):
        block_graph(spec)


def test_an_unknown_space_is_one_line_naming_the_known_ones(tmp_path):
    tree = dict(TREE, space={"type": "nope"})
    with pytest.raises(ConfigError, match=r"^config: space.type: unknown space 'nope'; known: \[.*'cnn'") as info:
        hwnas.load_config(tree)
    assert mlp_space.NAME in str(info.value) and set(SPACES) >= {"cnn", "vit", mlp_space.NAME}


def _plugin_dir(tmp_path, target: str):
    """A minimal installed distribution declaring one ``hwnas.spaces`` entry point."""
    info = tmp_path / "site" / "mlp_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlp-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[hwnas.spaces]\nmlp = {target}\n")
    return info.parent


def _lookup_in_fresh_process(site, name: str):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(repo)]))
    code = f"from hwnas.spaces.registry import space_entry; print(space_entry({name!r}).name)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_an_installed_space_plugin_is_found_by_a_fresh_process_without_an_import(tmp_path):
    """As a Ray worker or a new shell would: the entry point alone registers the space."""
    run = _lookup_in_fresh_process(_plugin_dir(tmp_path, "tests.mlp_space"), mlp_space.NAME)
    assert run.returncode == 0 and run.stdout.strip() == mlp_space.NAME, run.stderr


def test_a_broken_space_plugin_is_one_line_naming_it(tmp_path):
    run = _lookup_in_fresh_process(_plugin_dir(tmp_path, "tests.no_such_module"), "cnn")
    assert run.returncode == 1
    assert "ConfigError: space plugin 'mlp' (tests.no_such_module, entry point group hwnas.spaces) failed to load: " \
           "No module named 'tests.no_such_module'" in run.stderr
