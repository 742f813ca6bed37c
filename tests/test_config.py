"""Config loader: packaged YAMLs, base level, overrides, type checks, unknown keys, round trip."""

from pathlib import Path

import pytest
import yaml

from resvision.backbone import build_backbone_from_config
from resvision.backbone.resnet import BasicBlock, Bottleneck
from resvision.config import CONFIG_DIR, packaged_configs, save_config
from resvision.tasks import config_from_dict, load_config
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
    assert build_backbone_from_config(cfg.model.backbone).feature_specs[-1].channels == 2048
    cfg = load_config("classification", ["model.backbone.name=custom", "model.backbone.custom.block=basic",
                                         "model.backbone.custom.layers=[1, 1]", "model.backbone.custom.widths=[8, 16]"])
    assert [s.channels for s in build_backbone_from_config(cfg.model.backbone).feature_specs] == [8, 16]
    with pytest.raises(ConfigError, match="model.backbone.custom.block"):
        load_config("classification", ["model.backbone.custom.block=wide"])


def _last_bn_gammas(net):
    blocks = [m for m in net.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    return [(m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight for m in blocks]


def test_custom_zero_init_residual_from_the_command_line(tmp_path):
    base = ["model.backbone.name=custom", "model.backbone.custom.layers=[1, 2]", "model.backbone.custom.widths=[8, 16]"]
    cfg = load_config("classification", [*base, "model.backbone.custom.zero_init_residual=true"])
    gammas = _last_bn_gammas(build_backbone_from_config(cfg.model.backbone))
    assert len(gammas) == 3 and all(bool((g == 0).all()) for g in gammas)
    default = load_config("classification", base)
    assert all(bool((g == 1).all()) for g in _last_bn_gammas(build_backbone_from_config(default.model.backbone)))
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("override, message", [
    ("model.backbone.custom.layers=[2, 2]", "model.backbone.custom.widths must give one positive int per stage"),
    ("model.backbone.custom.groups=0", "model.backbone.custom.groups must be >= 1, got 0"),
])
def test_custom_section_is_validated_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:  # the detection default sets 4 widths
        load_config("detection", [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("name, args, fragment", [
    ("custom", "{block: basic}", "model.backbone.custom"),  # custom takes its options from its own section
    ("resnet18", "{frozen_stages: 2}", "model.backbone.args.frozen_stages"),  # would bypass finetune.*
    ("resnet18", "{pretrained: x.pth}", "model.backbone.args.pretrained"),
])
def test_backbone_args_that_are_not_builder_options(name, args, fragment):
    cfg = load_config("classification", [f"model.backbone.name={name}", f"model.backbone.args={args}"])
    with pytest.raises(ConfigError) as err:
        build_backbone_from_config(cfg.model.backbone)
    assert fragment in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- value bounds
@pytest.mark.parametrize("task, override, message", [
    ("classification", "train.epochs=-1", "train.epochs: must be >= 1, got -1"),
    ("classification", "train.epochs=0", "train.epochs: must be >= 1, got 0"),
    ("classification", "train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
    ("classification", "train.grad_accum=0", "train.grad_accum: must be >= 1, got 0"),
    ("classification", "train.max_iters=0", "train.max_iters: must be >= 1, got 0"),
    ("classification", "train.clip_grad=0", "train.clip_grad: must be > 0, got 0.0"),
    ("classification", "train.ema_decay=1", "train.ema_decay: must be < 1, got 1.0"),
    ("classification", "train.ema_decay=0", "train.ema_decay: must be > 0, got 0.0"),
    ("classification", "train.log_every=0", "train.log_every: must be >= 1, got 0"),
    ("classification", "train.eval_every=-2", "train.eval_every: must be >= 1, got -2"),
    ("classification", "train.checkpoint_every=0", "train.checkpoint_every: must be >= 1, got 0"),
    ("classification", "train.num_workers=-1", "train.num_workers: must be >= 0, got -1"),
    ("classification", "optim.lr=-1e-3", "optim.lr: must be >= 0, got -0.001"),
    ("classification", "optim.lr=.nan", "optim.lr: must be >= 0, got nan"),
    ("classification", "optim.weight_decay=-0.1", "optim.weight_decay: must be >= 0, got -0.1"),
    ("classification", "sched.warmup_epochs=-1", "sched.warmup_epochs: must be >= 0, got -1.0"),
    ("classification", "sched.decay_milestones=[3, -1]", "sched.decay_milestones[1]: must be >= 0, got -1"),
    ("classification", "finetune.backbone_lr_mult=-0.5", "finetune.backbone_lr_mult: must be >= 0, got -0.5"),
    ("classification", "finetune.layer_decay=1.5", "finetune.layer_decay: must be <= 1, got 1.5"),
    ("classification", "finetune.layer_decay=0", "finetune.layer_decay: must be > 0, got 0.0"),
    ("classification", "data.hflip=1.5", "data.hflip: must be <= 1, got 1.5"),
    ("classification", "data.color_jitter=-0.1", "data.color_jitter: must be >= 0, got -0.1"),
    ("classification", "data.mixup=-1", "data.mixup: must be >= 0, got -1.0"),
    ("classification", "data.cutmix=-1", "data.cutmix: must be >= 0, got -1.0"),
    ("classification", "data.val_fraction=1", "data.val_fraction: must be < 1, got 1.0"),
    ("classification", "data.image_size=0", "data.image_size: must be >= 1, got 0"),
    ("classification", "model.dropout=1", "model.dropout: must be < 1, got 1.0"),
    ("classification", "model.num_classes=0", "model.num_classes: must be >= 1, got 0"),
    ("detection", "data.hflip=-0.5", "data.hflip: must be >= 0, got -0.5"),
    ("detection", "data.min_visibility=2", "data.min_visibility: must be <= 1, got 2.0"),
    ("detection", "data.scale_jitter=[0, 1.2]", "data.scale_jitter[0]: must be > 0, got 0.0"),
    ("detection", "model.box_nms_thresh=-1", "model.box_nms_thresh: must be >= 0, got -1.0"),
    ("detection", "model.anchor_sizes=[[32], [0]]", "model.anchor_sizes[1][0]: must be >= 1, got 0"),
    ("detection", "model.rpn_positive_fraction=0", "model.rpn_positive_fraction: must be > 0, got 0.0"),
])
def test_impossible_numbers_fail_in_the_config_layer(task, override, message):
    with pytest.raises(ConfigError) as err:
        load_config(task, [override])
    assert str(err.value) == message


def test_bounds_accept_their_edges_and_none():
    cfg = load_config("classification", ["train.epochs=1", "data.hflip=0", "data.color_jitter=1",
                                         "finetune.layer_decay=1", "finetune.frozen_stages=-1", "train.max_iters=null"])
    assert (cfg.train.epochs, cfg.data.hflip, cfg.finetune.layer_decay, cfg.train.max_iters) == (1, 0.0, 1.0, None)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_valid_devices(device):
    assert load_config("classification", [f"train.device={device}"]).train.device == device


@pytest.mark.parametrize("device", ["gpu0", "cuda:x", "cuda:-1", "CPU", "cuda:0,1", "tpu"])
def test_bad_device_is_one_line(device):
    with pytest.raises(ConfigError) as err:
        load_config("classification", [f"train.device={device}"])
    assert str(err.value) == f"train.device: must be auto, cpu, cuda, cuda:N or mps, got {device!r}"


# ----------------------------------------------------------------------------- YAML words
def test_string_keys_accept_their_own_spelling():
    cfg = load_config("classification", ["train.amp=off", "name=yes", "optim.name=on", "train.monitor=no"])
    assert (cfg.train.amp, cfg.name, cfg.optim.name, cfg.train.monitor) == ("off", "yes", "on", "no")
    with pytest.raises(ConfigError) as err:
        load_config("classification", ["train.amp=on"])
    assert str(err.value) == "train.amp: 'on' is not one of 'auto', 'off', 'fp16', 'bf16'"


@pytest.mark.parametrize("word, value", [("yes", True), ("on", True), ("True", True), ("false", False),
                                         ("no", False), ("off", False), ("OFF", False)])
def test_bool_keys_accept_yaml_words(word, value):
    assert load_config("classification", [f"train.ema={word}"]).train.ema is value


def test_yaml_file_off_is_a_choice_and_round_trips(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("task: classification\ntrain:\n  amp: off\n  ema: yes\nname: no\n")
    cfg = load_config(path)
    assert (cfg.train.amp, cfg.train.ema, cfg.name) == ("off", True, "no")
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_renamed_key_reads_under_its_new_name_with_a_warning(caplog):
    """Classification's held-out fraction was `data.val_split` (detection's is a split name): the
    old spelling, in a command line or in a config stored by an older run, still loads."""
    with caplog.at_level("WARNING", logger="resvision"):
        cfg = load_config("classification", ["data.val_split=0.3"])
    assert cfg.data.val_fraction == 0.3
    assert "config key 'data.val_split' is now 'data.val_fraction'" in caplog.text
    stored = cfg.to_dict()
    stored["data"]["val_split"] = stored["data"].pop("val_fraction")
    assert config_from_dict(stored).data.val_fraction == 0.3


def test_string_keys_take_yaml_words_as_text():
    cfg = load_config("classification", ["name=true", "data.classes=[yes, no, true]"])
    assert cfg.name == "true" and cfg.data.classes == ["yes", "no", "true"]


def test_run_is_named_after_a_swapped_backbone():
    """``model.backbone.name=resnet50`` on the digits config is not a ``resnet20_digits`` run."""
    assert load_config("classification").name == "resnet20_digits"
    assert load_config("classification", ["model.backbone.name=resnet50"]).name == "resnet50_digits"
    assert load_config("segmentation", ["model.backbone.name=timm:resnet18"]).name == \
        "fpn_smallresnet_shapes_timm-resnet18"
    assert load_config("classification", ["model.backbone.name=resnet50", "name=mine"]).name == "mine"
    from resvision.config import _named_after_backbone

    bare = {"task": "classification", "name": "mine_digits", "model": {"backbone": None}}  # no backbone section
    assert _named_after_backbone(bare, {**bare, "model": {"backbone": {"name": "resnet50"}}},
                                 ["model.backbone.name=resnet50"])["name"] == "mine_digits_resnet50"
