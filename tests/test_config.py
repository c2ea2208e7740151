from pathlib import Path

import pytest
import yaml

from hwnas.config import default_config_text
from hwnas.job.checks import load_job_config as load_config
from hwnas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_default_is_the_shipped_experiment():
    assert default_config_text() == (ROOT / "experiments" / "digits-cnn.yaml").read_text()
    assert load_config(None) == load_config(ROOT / "experiments" / "digits-cnn.yaml")


def test_overrides_are_validated_like_the_file():
    cfg = load_config(None, ["train.epochs=3", "space.stages.0.channels=8", "search.objectives=[accuracy, latency]"])
    assert cfg.train.epochs == 3 and cfg.space.stages[0].channels == 8
    assert cfg.search.objectives == ["accuracy", "latency"]


def test_config_round_trips_through_its_dict():
    cfg = load_config(None)
    assert load_config(cfg.to_dict()) == cfg


@pytest.mark.parametrize("override,message", [
    ("train.epochs=-1", "train.epochs: Input should be greater than or equal to 0"),
    ("train.foo=1", "train.foo: unknown key"),
    ("bogus=1", "bogus: unknown key"),
    ("space.kernel_sizes=[4]", "space.kernel_sizes: kernel sizes must be distinct odd"),
    ("space.weight_bits=[]", "space.weight_bits: List should have at least 1 item"),
    ("space.weight_bits=[16]", "space.weight_bits.0: Input should be 2, 3, 4, 5, 6, 7, 8 or 32"),
    ("space.stages=[]", "space.stages: List should have at least 1 item"),
    ("space.stages.0.stride=3", "space.stages.0.stride: Input should be 1 or 2"),
    ("space.type=transformer", "space.type: unknown space 'transformer'"),
    ("search.max_latency_ms=-2", "search.max_latency_ms: Input should be greater than 0"),
    ("search.max_latency_ms=.nan", "search.max_latency_ms: Input should be greater than 0"),
    ("search.objectives=[latency, energy]", "objectives must include accuracy"),
    ("search.objectives=[accuracy, speed]", "search.objectives: unknown objective 'speed'"),
    ("data.val_fraction=0.6", "data.val_fraction: Input should be less than 0.5"),
    ("seed=abc", "seed: Input should be a valid integer"),
    ("name=../evil", "name: String should match pattern"),
    ("compute=tpu", "compute: Input should be 'auto', 'cpu' or 'cuda'"),
    ("train.epochs", "expected key=value"),
    ("space.stages.9.channels=3", "'9' is not an index of a list of 3"),
])
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_bad_key_names_its_source_the_set_or_the_file(tmp_path):
    """A user who mistypes a --set must not be sent to read the config file for it."""
    config = tmp_path / "job.yaml"
    config.write_text("train:\n  epochs: 2\n  epokhs: 3\n")
    with pytest.raises(ConfigError) as from_file:
        load_config(config, ["train.lr=0.1"])
    assert str(from_file.value) == f"{config}: train.epokhs: unknown key"
    config.write_text("train:\n  epochs: 2\n")
    with pytest.raises(ConfigError) as from_set:
        load_config(config, ["seed=1", "train.epoch=2"])
    assert str(from_set.value) == f"--set train.epoch=2 (over {config}): train.epoch: unknown key"
    with pytest.raises(ConfigError) as section:  # a --set of a whole section is blamed for a key inside it
        load_config(None, ["train={epochs: 1, bogus: 2}"])
    assert str(section.value).startswith("--set train={epochs: 1, bogus: 2}: train.bogus: unknown key")
    with pytest.raises(ConfigError) as checked:  # names checked against a registry, after the types
        load_config(config, ["data.dataset=mnist"])
    assert str(checked.value).startswith(f"--set data.dataset=mnist (over {config}): data.dataset: unknown dataset")


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"train": {"epochs": "many"}}))
    with pytest.raises(ConfigError, match="train.epochs: Input should be a valid integer"):
        load_config(bad)
