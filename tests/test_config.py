"""Config loader: packaged YAMLs, base level, overrides, type checks, unknown keys, round trip."""

from pathlib import Path

import pytest
import yaml

from resvision.config import CONFIG_DIR, load_config, packaged_configs, save_config
from resvision.errors import ConfigError


@pytest.mark.parametrize("name", packaged_configs())
def test_every_packaged_config_loads(name):
    cfg = load_config(name)
    assert cfg.task == name.split("/")[0]
    assert (CONFIG_DIR / f"{name}.yaml").is_file()


def test_task_name_gives_its_default_on_builtin_data():
    cfg = load_config("classification")
    assert cfg.data.format == "digits"
    assert cfg.model.backbone.name == "resnet20"


def test_overrides_are_typed():
    cfg = load_config("classification", ["model.backbone.name=resnet101", "train.epochs=3", "optim.lr=1e-3",
                                         "finetune.unfreeze_at={2: [3, 4]}", "data.classes=[a, b]"])
    assert cfg.model.backbone.name == "resnet101"
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.finetune.unfreeze_at == {2: [3, 4]}
    assert cfg.data.classes == ["a", "b"]


@pytest.mark.parametrize("override, key, suggestion", [
    ("train.epoch=3", "'train.epoch'", "'train.epochs'"),
    ("trian.epochs=3", "'trian'", "'train'"),
    ("model.backbone.nme=resnet50", "'model.backbone.nme'", "'model.backbone.name'"),
])
def test_unknown_key_names_key_and_suggestion(override, key, suggestion):
    with pytest.raises(ConfigError) as err:
        load_config("classification", [override])
    message = str(err.value)
    assert f"unknown config key {key} (did you mean {suggestion}?)" == message


@pytest.mark.parametrize("override, fragment", [
    ("train.epochs=abc", "train.epochs"),
    ("train.epochs=1.5", "train.epochs"),
    ("train.amp=fp8", "'fp16'"),
    ("model.backbone.norm=gn", "frozen_bn"),
    ("finetune.unfreeze_at={x: [1]}", "finetune.unfreeze_at"),
    ("train.ema=maybe", "train.ema"),
])
def test_wrong_type_is_one_line_naming_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config("classification", [override])
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_malformed_override():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config("classification", ["train.epochs"])


def test_one_base_level_merges_and_two_are_refused(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"task": "classification", "train": {"epochs": 7, "batch_size": 8}}))
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"base": "base.yaml", "train": {"epochs": 2}}))
    cfg = load_config(child)
    assert (cfg.train.epochs, cfg.train.batch_size) == (2, 8)
    grandchild = tmp_path / "grandchild.yaml"
    grandchild.write_text(yaml.safe_dump({"base": "child.yaml"}))
    with pytest.raises(ConfigError, match="only one base level"):
        load_config(grandchild)


def test_unknown_key_in_file_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: classification\ndata:\n  formt: digits\n")
    with pytest.raises(ConfigError, match="data.format"):
        load_config(bad)
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="classification"):
        load_config("clasification")


def test_saved_config_reloads_equal(tmp_path):
    cfg = load_config("classification", ["train.epochs=4", "finetune.unfreeze_at={1: [4]}", "name=x"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert again.run_dir == Path("runs/classification/x")


def test_custom_section_applies_only_to_the_custom_backbone():
    cfg = load_config("detection", ["model.backbone.name=resnet50"])  # the default is `custom`
    assert cfg.model.backbone.build().feature_specs[-1].channels == 2048
    cfg = load_config("classification", ["model.backbone.name=custom", "model.backbone.custom.block=basic",
                                         "model.backbone.custom.layers=[1, 1]", "model.backbone.custom.widths=[8, 16]"])
    assert [s.channels for s in cfg.model.backbone.build().feature_specs] == [8, 16]
    with pytest.raises(ConfigError, match="model.backbone.custom.block"):
        load_config("classification", ["model.backbone.custom.block=wide"])
