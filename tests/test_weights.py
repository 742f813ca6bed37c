"""Weight loading: local files, checkpoint layouts, torchvision / timm caches, and one-line errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from resvision.backbone import Backbone, build_backbone, build_backbone_from_config, load_pretrained, read_state_dict
from resvision.backbone.weights import torchvision_cache_path
from resvision.tasks import load_config
from resvision.errors import ConfigError, WeightsError

TV_RESNET18_V1_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"



@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESVISION_OFFLINE", "1")


@pytest.fixture(scope="module")
def tv_state() -> dict[str, torch.Tensor]:
    """A random torchvision resnet18 state dict, fc included, with non-trivial BN statistics."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    return model.state_dict()


def assert_loaded(backbone: Backbone, state: dict[str, torch.Tensor], prefix: str = "") -> None:
    own = backbone.state_dict()
    for key, value in state.items():
        if key.startswith(prefix + "fc.") or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(own[key[len(prefix):]], value), key


def single_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_file_round_trip(tmp_path: Path, tv_state: dict, suffix: str) -> None:
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(tv_state, path)
    else:
        save_file({k: v.contiguous() for k, v in tv_state.items()}, str(path))
    net = build_backbone("resnet18", pretrained=str(path))
    assert_loaded(net, tv_state)
    assert net.load_report.num_tensors == sum(1 for k in tv_state if not k.startswith("fc."))
    assert net.load_report.dropped == ["fc.bias", "fc.weight"]
    assert str(net.load_report).startswith(f"loaded {net.load_report.num_tensors} tensors from {path}")


def test_checkpoint_layouts(tmp_path: Path, tv_state: dict) -> None:
    # Our task checkpoints: {"model": task_model.state_dict(), ...} with the backbone under "backbone.".
    task = {"model": {**{f"backbone.{k}": v for k, v in tv_state.items() if not k.startswith("fc.")},
                      "fc.weight": torch.zeros(3, 512), "fc.bias": torch.zeros(3)}, "epoch": 3}
    # A DDP-wrapped training script's checkpoint.
    ddp = {"state_dict": {f"module.{k}": v for k, v in tv_state.items()}}
    for name, data in (("task.pth", task), ("ddp.pth", ddp)):
        torch.save(data, tmp_path / name)
        assert_loaded(build_backbone("resnet18", pretrained=str(tmp_path / name)), tv_state)


def test_frozen_bn_loads_batchnorm_weights(tmp_path: Path, tv_state: dict) -> None:
    torch.save(tv_state, tmp_path / "w.pth")
    frozen = build_backbone("resnet18", pretrained=str(tmp_path / "w.pth"), norm="frozen_bn").eval()
    plain = build_backbone("resnet18", pretrained=str(tmp_path / "w.pth")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x)["c5"], plain(x)["c5"], rtol=1e-5, atol=1e-5)


def test_sha256(tmp_path: Path, tv_state: dict) -> None:
    path = tmp_path / "w.pth"
    torch.save(tv_state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    build_backbone("resnet18", pretrained=str(path), pretrained_sha256=digest)
    with pytest.raises(WeightsError) as info:
        build_backbone("resnet18", pretrained=str(path), pretrained_sha256="0" * 64)
    message = single_line_error(info)
    assert str(path) in message and "0" * 64 in message and digest in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as info:
        build_backbone("resnet18", pretrained=str(tmp_path / "nope.pth"))
    assert str(tmp_path / "nope.pth") in single_line_error(info)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError) as info:
        read_state_dict(path)
    assert str(path) in single_line_error(info)


class _NotATensor:  # any non-allow-listed global must be refused by torch.load(weights_only=True)
    pass


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _NotATensor()}, path)
    with pytest.raises(WeightsError) as info:
        read_state_dict(path)
    assert str(path) in single_line_error(info)


def test_mismatched_keys_are_named(tmp_path: Path, tv_state: dict) -> None:
    broken = {k: v for k, v in tv_state.items() if k != "layer3.1.conv2.weight"}
    broken["layer9.weight"] = torch.zeros(1)
    broken["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(WeightsError) as info:
        build_backbone("resnet18", pretrained=str(tmp_path / "broken.pth"))
    message = single_line_error(info)
    assert "layer3.1.conv2.weight" in message and "layer9.weight" in message and "conv1.weight" in message


def test_torchvision_offline_and_cached(tmp_path: Path, tv_state: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # what torch.hub.set_dir() sets
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert torchvision_cache_path(TV_RESNET18_V1_URL) == expected
    with pytest.raises(WeightsError) as info:
        build_backbone("resnet18", pretrained="torchvision:IMAGENET1K_V1")
    message = single_line_error(info)
    assert TV_RESNET18_V1_URL in message and str(expected) in message
    expected.parent.mkdir(parents=True)
    torch.save(tv_state, expected)
    net = build_backbone("resnet18", pretrained="torchvision:IMAGENET1K_V1")
    assert_loaded(net, tv_state)
    assert str(expected) in net.load_report.source
    assert_loaded(build_backbone("resnet18", pretrained="DEFAULT"), tv_state)  # V1 is resnet18's default


def test_unknown_torchvision_weights() -> None:
    with pytest.raises(WeightsError) as info:
        build_backbone("resnet18", pretrained="torchvision:IMAGENET1K_V9")
    assert "IMAGENET1K_V1" in single_line_error(info)
    with pytest.raises(WeightsError):
        build_backbone("resnet20", pretrained="torchvision:IMAGENET1K_V1")  # CIFAR nets have none


def _fake_hf_cache(root: Path, repo_id: str, state: dict[str, torch.Tensor]) -> None:
    """Lays out ``state`` as huggingface_hub caches a download: refs/main -> snapshots/<rev>/file."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(repo / "snapshots" / "0123abcd" / "model.safetensors"))


def test_timm_tags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants
    import timm

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsError) as info:
        build_backbone("resnet18", pretrained="timm:a1_in1k")
    message = single_line_error(info)
    assert "timm/resnet18.a1_in1k" in message and str(tmp_path) in message
    torch.manual_seed(1)
    timm_state = timm.create_model("resnet18").state_dict()
    _fake_hf_cache(tmp_path, "timm/resnet18.a1_in1k", timm_state)
    assert_loaded(build_backbone("resnet18", pretrained="timm:a1_in1k"), timm_state)  # our ResNet
    wrapped = build_backbone("timm:resnet18", pretrained="timm:a1_in1k")  # through timm's own loader
    assert "resnet18.a1_in1k" in wrapped.load_report.source
    assert_loaded(wrapped, {f"body.{k}": v for k, v in timm_state.items() if not k.startswith("fc.")})


def test_timm_backbone_local_full_model_checkpoint(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(2)
    full = timm.create_model("mobilenetv3_small_050").eval()  # keys such as blocks.0.0.conv_dw.weight
    torch.save(full.state_dict(), tmp_path / "mnv3.pth")
    net = build_backbone("timm:mobilenetv3_small_050", pretrained=str(tmp_path / "mnv3.pth")).eval()
    assert net.load_report.dropped  # the classifier head
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = full.forward_intermediates(x, indices=[4], intermediates_only=True)[-1]
        torch.testing.assert_close(net(x)["c5"], reference)


def test_load_pretrained_needs_a_known_spec() -> None:
    net = build_backbone("resnet18")
    with pytest.raises(WeightsError) as info:
        load_pretrained(net, "not-a-file", arch="resnet18")
    assert "not-a-file" in single_line_error(info)


class _RunsOnLoad:
    """Unpickling this calls ``Path.touch(marker)``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("option", ["checkpoint_path", "pretrained_cfg_overlay", "pretrained_cfg"])
def test_timm_weight_source_options_are_refused(tmp_path: Path, option: str) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _RunsOnLoad(marker)}, evil)
    value = str(evil) if option == "checkpoint_path" else {"file": str(evil), "num_classes": 1000}
    with pytest.raises(ConfigError) as info:
        build_backbone("timm:resnet18", **{option: value})
    message = single_line_error(info)
    assert repr(option) in message and "pretrained=<file>" in message
    assert not marker.exists()


def test_timm_weight_source_options_are_refused_from_a_config(tmp_path: Path) -> None:
    cfg = load_config("classification", ["model.backbone.name=timm:resnet18",
                                         f"model.backbone.args={{checkpoint_path: {tmp_path / 'w.pth'}}}"])
    with pytest.raises(ConfigError) as info:
        build_backbone_from_config(cfg.model.backbone)
    assert "model.backbone.pretrained" in single_line_error(info)
