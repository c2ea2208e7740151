"""Starting a space from a pretrained timm model: the space is built around it, every weight
loads, the largest subnet computes what timm computes, and anything the space lacks is named.

Every checkpoint is a timm model with random weights saved here (nothing is downloaded); its norm
parameters and statistics are randomized too, so a misplaced one changes the output.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

import hwnas
from hwnas.cli.app import main
from hwnas.errors import ConfigError, HwnasError
from hwnas.job.checks import load_job_config
from hwnas.spaces.pretrained import check_reproduces, load_into_timm
from hwnas.spaces.registry import build_space, load_pretrained, space_entry

REPO = Path(__file__).resolve().parents[1]
VIT = {"img_size": 16, "patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2}
CNN = {"depth_multiplier": 0.3}  # mobilenetv2_035 with one or two blocks per stage


def _timm(name: str, classes: int = 3, **kwargs) -> torch.nn.Module:
    torch.manual_seed(1)
    model = timm.create_model(name, pretrained=False, num_classes=classes, **kwargs).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _save(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _space_config(space: dict):
    return load_job_config({"space": space}).space


def _started(space_tree: dict, input_shape=(3, 16, 16), classes: int = 3):
    """(space, supernet, record of load_pretrained) as a job's train stage makes them."""
    space = build_space(_space_config(space_tree), input_shape, classes)
    torch.manual_seed(0)
    supernet = space_entry(space_tree["type"]).build_supernet(space)
    return space, supernet, load_pretrained(space_tree["type"], supernet, space)


def _vit_init(path: Path, **kwargs) -> dict:
    return {"type": "vit", "init": {"timm": "vit_tiny_patch16_224", "checkpoint": str(path), "kwargs": {**VIT, **kwargs}}}


def _cnn_init(path: Path, name: str = "mobilenetv2_035", **kwargs) -> dict:
    return {"type": "cnn", "init": {"timm": name, "checkpoint": str(path), "kwargs": {**CNN, **kwargs}}}


# -- the vit space -------------------------------------------------------------------------------
def test_vit_space_is_built_around_the_model_and_its_largest_subnet_is_the_model(tmp_path):
    reference = _timm("vit_tiny_patch16_224", **VIT)
    space, supernet, record = _started(_vit_init(_save(reference, tmp_path / "vit.safetensors")))
    cfg = space.config
    assert (cfg.patch_size, cfg.head_dim, cfg.qkv_bias) == (4, 16, True)
    assert (cfg.embed_dims, cfg.depths, cfg.heads, cfg.mlp_ratios) == ([16, 24, 32], [1, 2], [1, 2], [2.0, 3.0, 4.0])
    assert record["compared"] == "logits" and record["relative_difference"] <= 1e-4 and record["notes"] == []
    x = torch.randn(5, 3, 16, 16)
    supernet.eval().set_active(space.largest())
    with torch.no_grad():
        torch.testing.assert_close(supernet(x), reference(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(supernet.extract()(x), reference(x), rtol=1e-4, atol=1e-5)


def test_vit_checkpoint_for_other_classes_keeps_all_but_the_classifier(tmp_path):
    reference = _timm("vit_tiny_patch16_224", classes=5, **VIT)
    path = tmp_path / "vit.pth"
    torch.save({"model": reference.state_dict()}, path)  # a PyTorch file, read with weights_only=True
    space, supernet, record = _started(_vit_init(path))
    assert record["compared"] == "pre-logits features"
    assert "classifier (head.weight, head.bias)" in record["notes"][0]
    supernet.eval().set_active(space.largest())
    supernet.head = reference.head  # with the 5-class classifier back, the logits are the model's
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(supernet(x), reference(x), rtol=1e-4, atol=1e-5)


def test_vit_checkpoint_of_another_size_or_no_checkpoint_is_named(tmp_path):
    other = _save(_timm("vit_tiny_patch16_224", **{**VIT, "embed_dim": 48}), tmp_path / "other.safetensors")
    with pytest.raises(HwnasError, match=r"other.safetensors has \S+ of shape \(.*48.*\), vit_tiny_patch16_224 "
                                         r"\(kwargs .*\) needs"):
        _started(_vit_init(other))
    with pytest.raises(HwnasError, match="space.init.checkpoint: .*absent.pth does not exist"):
        _started(_vit_init(tmp_path / "absent.pth"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(HwnasError, match="junk.pth is not a readable checkpoint"):
        _started(_vit_init(tmp_path / "junk.pth"))


def test_the_check_fails_when_the_largest_subnet_computes_something_else(tmp_path):
    path = _save(_timm("vit_tiny_patch16_224", **VIT), tmp_path / "vit.safetensors")
    space, supernet, _ = _started(_vit_init(path))
    init = space.config.init
    model = init.create(3)
    assert load_into_timm(model, init) == []
    check_reproduces(supernet, model, space.largest(), space.input_shape, init, None)  # as loaded: passes
    with torch.no_grad():
        supernet.blocks[1].mlp.fc2.weight.mul_(1.5)
    with pytest.raises(HwnasError, match=r"space.init: the supernet's largest subnet does not reproduce "
                                         r"vit_tiny_patch16_224's logits from .*vit.safetensors: largest difference"):
        check_reproduces(supernet, model, space.largest(), space.input_shape, init, None)


@pytest.mark.parametrize("change, message", [
    ({"embed_dims": [16, 64]}, "space.embed_dims: the pretrained vit_tiny_patch16_224 has embedding dimension 32, "
                               "so the largest choice must be 32 (got [16, 64]); leave the key out or null"),
    ({"patch_size": 2}, "space.patch_size: the pretrained vit_tiny_patch16_224 has patch size 4 (got 2)"),
    ({"weight_bits": [4, 8]}, "space.weight_bits: the largest subnet is the float vit_tiny_patch16_224, so the "
                              "choices must include 32"),
    ({"attentions": ["linear", "softmax"]}, "space.attentions: .* the first choice must be 'softmax'"),
    ({"pretrained": "vit.pth"}, "space.pretrained: replaced by space.init: {timm: <timm architecture>"),
    ({"init": {"timm": "vit_nope", "checkpoint": "x"}}, "space.init.timm: unknown timm architecture 'vit_nope'"),
    ({"init": {"timm": "vit_tiny_patch16_224", "checkpoint": "x", "kwargs": {"pretrained": True}}},
     "space.init.kwargs: 'pretrained' is set by hwnas or would fetch weights"),
    ({"init": {"timm": "vit_tiny_patch16_224", "checkpoint": "x", "kwargs": {**VIT, "init_values": 1e-5}}},
     "space.init: vit_tiny_patch16_224: blocks.0.ls1: layer scale is not in the vit space"),
    ({"init": {"timm": "vit_tiny_patch16_224", "checkpoint": "x", "kwargs": {**VIT, "global_pool": "avg"}}},
     "space.init: vit_tiny_patch16_224: head: pooling 'avg' .* is not in the vit space"),
])
def test_vit_config_that_contradicts_the_model_is_refused_by_name(change, message):
    tree = {**_vit_init(Path("vit.safetensors")), **change}
    with pytest.raises(ConfigError, match=re.escape(message).replace(r"\.\*", ".*")):
        _space_config(tree)


def test_vit_input_of_another_size_names_data_image_size():
    config = _space_config(_vit_init(Path("vit.safetensors")))
    with pytest.raises(HwnasError, match=r"data.image_size: vit_tiny_patch16_224 .* takes 16x16 images, the data is "
                                         r"32x32: set data.image_size: 16, or space.init.kwargs.img_size: 32"):
        build_space(config, (3, 32, 32), 3)


# -- the cnn space ---------------------------------------------------------------------------------
def test_cnn_space_is_built_around_a_mobilenetv2_and_its_largest_subnet_is_the_model(tmp_path):
    reference = _timm("mobilenetv2_035", **CNN)
    space, supernet, record = _started(_cnn_init(_save(reference, tmp_path / "mnv2.safetensors")))
    cfg = space.config
    assert (cfg.stem_channels, cfg.stem_stride, cfg.head_channels) == (16, 2, 1280)
    stages = [(s.channels, s.stride, s.depth, s.expand_ratios, s.kernel_sizes) for s in cfg.stages]
    assert stages[0] == (8, 1, [1], [1], [3]) and stages[1] == (8, 2, [1], [3, 5, 6], [3])
    assert [s[2] for s in stages] == [[1], [1], [1], [1, 2], [1], [1], [1]]  # blocks.3 has two blocks
    assert record["compared"] == "logits" and record["relative_difference"] <= 1e-4
    x = torch.randn(4, 3, 16, 16)
    supernet.eval().set_active(space.largest())
    with torch.no_grad():
        torch.testing.assert_close(supernet(x), reference(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(supernet.extract()(x), reference(x), rtol=1e-4, atol=1e-5)
    assert space.block_layout() is None  # stages with lists of their own are priced subnet by subnet
    archs = space.covering_archs()
    for i, stage in enumerate(cfg.stages):  # the profiled networks meet each stage's own choices
        assert {a[f"s{i}.b0.expand"] for a in archs} == set(stage.expand_ratios)


def test_cnn_efficientnet_lite_stages_take_their_own_kernels_and_expand_ratios():
    config = _space_config({"type": "cnn", "init": {"timm": "efficientnet_lite0", "checkpoint": "x.safetensors"}})
    assert [max(s.kernel_sizes) for s in config.stages] == [3, 3, 5, 3, 5, 5, 3]
    assert [max(s.expand_ratios) for s in config.stages] == [1, 6, 6, 6, 6, 6, 6]
    assert [max(s.depth) for s in config.stages] == [1, 2, 2, 3, 3, 4, 1]
    assert config.stages[2].kernel_sizes == [3, 5] and config.stages[5].depth == [2, 3, 4]


@pytest.mark.parametrize("name, kwargs, message", [
    ("mobilenetv3_small_050", {}, r"space\.init: mobilenetv3_small_050: bn1: activation Hard[sS]wish is not in the "
                                  r"cnn space"),
    ("efficientnet_b0", {"act_layer": "relu6"},
     r"space\.init: efficientnet_b0: blocks\.0\.0\.se: squeeze-excite is not in the cnn space"),
    ("tf_mobilenetv3_small_minimal_100", {}, r"space\.init: tf_mobilenetv3_small_minimal_100: conv_stem: a Conv2dSame"),
    ("resnet18", {}, r"space\.init\.timm: resnet18 is a timm ResNet; the cnn space starts from"),
])
def test_cnn_the_first_timm_layer_the_space_lacks_is_named(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _space_config({"type": "cnn", "init": {"timm": name, "checkpoint": "x.safetensors", "kwargs": kwargs}})


def test_cnn_stages_that_contradict_the_model_are_refused_by_name():
    tree = _cnn_init(Path("x.safetensors"))
    stages = [{"channels": 8, "stride": 1, "depth": [1]}, {"channels": 16, "stride": 2, "depth": [1]}]
    with pytest.raises(ConfigError, match=r"space.stages: the pretrained mobilenetv2_035 has 7 stages"):
        _space_config({**tree, "stages": stages})
    stages = _space_config(tree).model_dump()["stages"]
    stages[1]["kernel_sizes"] = [3, 5]
    with pytest.raises(ConfigError, match=re.escape("space.stages.1.kernel_sizes: the pretrained mobilenetv2_035 "
                                                    "has blocks.1 kernel 3, so the largest choice must be 3")):
        _space_config({**tree, "stages": stages})


# -- the README's example --------------------------------------------------------------------------
def test_readme_checkpoint_and_shipped_config_start_a_supernet(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"<!-- snippet: timm-checkpoint -->\s*```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md snippet timm-checkpoint", "exec"), {})  # in process: no second torch import
    tree = yaml.safe_load((REPO / "experiments" / "imagefolder-vit-timm.yaml").read_text(encoding="utf-8"))
    tree["space"]["init"]["checkpoint"] = str(tmp_path / "vit_tiny_32px.safetensors")
    config = load_job_config(tree)
    assert (config.space.embed_dims, config.space.depths) == ([96, 144, 192], [6, 9, 12])
    space = build_space(config.space, (3, config.data.image_size, config.data.image_size), 10)
    supernet = space_entry("vit").build_supernet(space)
    record = load_pretrained("vit", supernet, space)  # the snippet's model has timm's 1000 classes, the data 10
    assert record["compared"] == "pre-logits features" and record["relative_difference"] <= 1e-4


# -- end to end: the real command, from a local checkpoint, through search and export ---------------
def _image_folder(root: Path, classes: int = 3, per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (16, 16, 3))
            pixels[..., c] += 180  # each class its own colour, with noise
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


JOB = {"seed": 0, "data": {"dataset": "imagefolder", "image_size": 16, "batch_size": 16, "val_fraction": 0.25,
                           "test_fraction": 0.25},
       "train": {"epochs": 1, "subnets_per_step": 2, "recalibration_samples": 16, "threads": 1},
       "device": {"warmup": 1, "repeats": 3, "rounds": 3, "correction_samples": 0},
       "predictor": {"samples": 10, "model": "ridge"},
       "search": {"population": 8, "generations": 2, "evaluate": 3}}


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_search_and_export_from_a_local_timm_checkpoint(kind, tmp_path, capsys):
    if kind == "vit":
        path = _save(_timm("vit_tiny_patch16_224", **VIT), tmp_path / "vit.safetensors")
        space = {**_vit_init(path), "embed_dims": [16, 32], "heads": [1, 2], "mlp_ratios": [2.0, 4.0],
                 "attentions": ["softmax"], "weight_bits": [32], "act_bits": [32]}
    else:
        path = _save(_timm("mobilenetv2_035", **CNN), tmp_path / "mnv2.safetensors")
        space = {**_cnn_init(path), "weight_bits": [8, 32], "act_bits": [32]}
    config = {**JOB, "name": f"{kind}-timm", "space": space,
              "data": {**JOB["data"], "root": str(_image_folder(tmp_path / "images"))}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    work = tmp_path / "w"
    assert main(["search", str(tmp_path / "job.yaml"), "--workdir", str(work), "--quiet"]) == 0
    capsys.readouterr()
    job = hwnas.open_job(f"{kind}-timm", workdir=work)
    assert job.attrs["pretrained_init"]["compared"] == "logits"
    assert job.attrs["pretrained_init"]["relative_difference"] <= 1e-4
    assert main(["front", f"{kind}-timm", "--workdir", str(work), "--format", "json"]) == 0
    best = str(json.loads(capsys.readouterr().out)[0]["id"])
    assert main(["export", f"{kind}-timm", "--workdir", str(work), "--candidate", best,
                 "--out", str(tmp_path / "e")]) == 0
    model = hwnas.load_exported(tmp_path / "e")
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 3)
