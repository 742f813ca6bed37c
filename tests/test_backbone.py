"""Backbone registry, torchvision equivalence, declared feature shapes and freezing."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from resvision.backbone import Backbone, FeatureSpec, build_backbone, list_backbones, register_backbone
from resvision.backbone.base import count_parameters
from resvision.backbone.resnet import (
    CIFAR_ARCHS, PLAIN_ARCHS, TORCHVISION_ARCHS, BasicBlock, Bottleneck, ResNetConfig, ShortcutA, SqueezeExcite,
)
from resvision.config import BackboneConfig
from resvision.errors import ConfigError

TORCHVISION_NAMES = list(TORCHVISION_ARCHS)
CUSTOM_CONFIGS = [
    # (options, input side)
    (dict(block="basic", layers=[1, 1, 1], widths=[16, 32, 64], stem="cifar", se=True, shortcut="A"), 32),
    (dict(block="bottleneck", layers=[1, 2, 1, 1], stem="deep", groups=4, width_per_group=16, se=True), 64),
    (dict(block="bottleneck", layers=[1, 1], widths=[32, 64], stride_in_1x1=True), 64),
    (dict(block="basic", layers=[1, 1, 1, 1, 1], widths=[8, 8, 16, 16, 32]), 64),  # 5 stages: c2..c6
]



@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESVISION_OFFLINE", "1")


def assert_specs_match(backbone: Backbone, side: int) -> None:
    """Runs one image and checks names, order, channels and strides against the declaration."""
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, side, side))
    assert list(out) == [s.name for s in backbone.feature_specs]
    for spec in backbone.feature_specs:
        size = math.ceil(side / spec.stride)
        assert tuple(out[spec.name].shape) == (1, spec.channels, size, size), spec


def test_registry_names() -> None:
    expected = set(TORCHVISION_NAMES) | set(CIFAR_ARCHS) | set(PLAIN_ARCHS) | {"custom", "timm:<model>"}
    assert set(list_backbones()) == expected
    assert list_backbones() == sorted(list_backbones())


def random_torchvision(name: str, seed: int = 0) -> nn.Module:
    """torchvision's model with random weights *and* random BN statistics, in eval mode.

    torchvision's own init leaves every BN an identity (gamma 1, beta 0, mean 0, var 1), which would
    hide a swapped or misnamed BN; uniform fills are also ~2x faster than kaiming_normal_ on 2 cores.
    """
    with torch.device("meta"):
        model = torchvision.models.get_model(name)
    model = model.to_empty(device="cpu").eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                bound = math.sqrt(6 / module.weight[0].numel())  # He-uniform keeps activations O(1)
                module.weight.uniform_(-bound, bound, generator=gen)
                if module.bias is not None:
                    module.bias.uniform_(-0.1, 0.1, generator=gen)
            elif isinstance(module, nn.BatchNorm2d):
                for tensor, low, high in ((module.weight, 0.5, 1.5), (module.bias, -0.1, 0.1),
                                          (module.running_mean, -0.1, 0.1), (module.running_var, 0.5, 1.5)):
                    tensor.uniform_(low, high, generator=gen)
                module.num_batches_tracked.zero_()
    return model


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_matches_torchvision(name: str) -> None:
    """Same keys, parameter count, feature shapes and logits as torchvision's model."""
    reference = random_torchvision(name)
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    with torch.device("meta"):  # our init is skipped: the reference's weights are assigned below
        ours = build_backbone(name)
    assert list(ours.state_dict()) == list(state)  # names *and* order
    ours.load_state_dict(state, strict=True, assign=True)
    ours.eval()
    fc = reference.fc
    assert count_parameters(ours) + count_parameters(fc) == count_parameters(reference)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = ours(x)
        logits = fc(torch.flatten(nn.functional.adaptive_avg_pool2d(feats["c5"], 1), 1))
        torch.testing.assert_close(logits, reference(x), atol=1e-5, rtol=1e-5)
    assert [(s.name, s.stride) for s in ours.feature_specs] == [("c2", 4), ("c3", 8), ("c4", 16), ("c5", 32)]
    for spec in ours.feature_specs:
        assert tuple(feats[spec.name].shape) == (1, spec.channels, 64 // spec.stride, 64 // spec.stride)


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "custom"])
def test_zero_init_residual_zeroes_every_last_bn(name: str) -> None:
    options = dict(layers=[1, 2], widths=[8, 16]) if name == "custom" else {}
    net = build_backbone(name, zero_init_residual=True, **options)
    blocks = [m for m in net.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    last_bns = [m.bn3 if isinstance(m, Bottleneck) else m.bn2 for m in blocks]
    assert blocks and all(bool((bn.weight == 0).all()) for bn in last_bns)
    assert bool((net.bn1.weight == 1).all())  # the stem BN keeps gamma 1


def test_resnet_config_is_the_one_schema() -> None:
    # The config section model.backbone.custom *is* ResNetConfig, so no option can drift away.
    assert BackboneConfig.__dataclass_fields__["custom"].default_factory is ResNetConfig
    cfg = ResNetConfig(block="basic", layers=[1, 1], widths=[8, 16], zero_init_residual=True)
    net = build_backbone("custom", **dataclasses.asdict(cfg))
    assert net.cfg == cfg


def test_own_init_matches_torchvision_scheme() -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet50", zero_init_residual=True)
    conv = net.layer3[0].conv2  # kaiming_normal_(fan_out): std = sqrt(2 / (out_channels * k * k))
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.05)
    assert torch.all(net.bn1.weight == 1) and torch.all(net.bn1.bias == 0)
    assert torch.all(net.layer1[0].bn3.weight == 0)  # zero_init_residual
    assert torch.all(build_backbone("resnet18").layer1[0].bn2.weight == 1)  # off by default


@pytest.mark.parametrize("name", list(CIFAR_ARCHS))
def test_cifar_specs_and_option_a(name: str) -> None:
    net = build_backbone(name)
    n = (CIFAR_ARCHS[name] - 2) // 6
    assert [len(getattr(net, f"layer{i}")) for i in (1, 2, 3)] == [n, n, n]
    assert [(s.name, s.channels, s.stride) for s in net.feature_specs] == [("c2", 16, 1), ("c3", 32, 2), ("c4", 64, 4)]
    assert not any("downsample" in k for k in net.state_dict())  # option A has no parameters
    assert isinstance(net.layer2[0].downsample, ShortcutA)
    assert_specs_match(net, 32)


@pytest.mark.parametrize("options,side", CUSTOM_CONFIGS)
def test_custom_specs(options: dict, side: int) -> None:
    assert_specs_match(build_backbone("custom", **options), side)


def test_custom_options_take_effect() -> None:
    net = build_backbone("custom", block="bottleneck", layers=[1, 1], stem="deep", se=True, stride_in_1x1=True)
    assert isinstance(net.conv1, nn.Sequential) and len(net.conv1) == 7
    assert net.layer2[0].conv1.stride == (2, 2) and net.layer2[0].conv2.stride == (1, 1)
    assert net.layer1[0].se is not None
    assert [s.name for s in net.feature_specs] == ["c2", "c3"]


def test_squeeze_excite_gates_channels() -> None:
    torch.manual_seed(0)
    se = SqueezeExcite(32)
    x = torch.randn(2, 32, 5, 5)
    gate = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(se(x), x * gate)
    plain = count_parameters(build_backbone("custom", block="basic", layers=[1, 1], widths=[16, 32], stem="cifar"))
    with_se = count_parameters(build_backbone("custom", block="basic", layers=[1, 1], widths=[16, 32], stem="cifar",
                                              se=True))
    # One SE per block: fc1 (C*8 + 8) + fc2 (8*C + C), with C = 16 and 32 (at least 8 hidden units).
    assert with_se - plain == (16 * 8 + 8 + 8 * 16 + 16) + (32 * 8 + 8 + 8 * 32 + 32)


@pytest.mark.parametrize("name", ["timm:resnet18", "timm:mobilenetv3_small_050"])
def test_timm_specs(name: str) -> None:
    net = build_backbone(name)
    assert [s.name for s in net.feature_specs] == ["c2", "c3", "c4", "c5"]
    assert [s.stride for s in net.feature_specs] == [4, 8, 16, 32]
    assert_specs_match(net, 64)
    full = build_backbone(name, out_features=["c1", "c4"])
    assert [(s.name, s.stride) for s in full.feature_specs] == [("c1", 2), ("c4", 16)]
    assert_specs_match(full, 64)


def test_timm_resnet_declares_like_ours() -> None:
    assert build_backbone("timm:resnet50").feature_specs == build_backbone("resnet50").feature_specs


def test_out_features_subset_and_c1() -> None:
    net = build_backbone("resnet18", out_features=["c4", "c1", "c2"])
    assert net.feature_names == ["c1", "c2", "c4"]  # network order, whatever the request order
    assert net.feature_specs[0] == FeatureSpec("c1", 64, 2)
    assert net.out_channels == 256
    assert_specs_match(net, 64)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(name="resnet5"), "resnet50"),
    (dict(name="resnet18", out_features=["c9"]), "c5"),
    (dict(name="resnet18", frozen_stages=5), "frozen_stages=5"),
    (dict(name="resnet18", norm="gn"), "frozen_bn"),
    (dict(name="resnet18", block="basic"), "zero_init_residual"),
    (dict(name="custom", block="dense"), "bottleneck"),
    (dict(name="custom", layers=[2, 2], widths=[64]), "widths"),
    (dict(name="custom", widths=[64, 32, 16, 8], shortcut="A"), "shortcut"),
    (dict(name="timm:resnet18x"), "timm:resnet18"),
    (dict(name="custom", blocks="basic"), "'block'"),  # one schema: ResNetConfig's fields are the options
    (dict(name="timm:../../x"), "'../../x' is not a timm model name"),
    (dict(name="timm:hf-hub:timm/resnet18"), "'hf-hub:timm/resnet18' is not a timm model name"),
    (dict(name="timm:resnet18.bogus"), "no pretrained tag 'bogus' for resnet18"),
    (dict(name="timm:resnet18", act_layer="nosuchact"), "act_layer='nosuchact'"),
    (dict(name="timm:resnet18", norm_layer="nosuchnorm"), "norm_layer='nosuchnorm'"),
    (dict(name="timm:resnet18", no_such_option=1), "no_such_option=1"),
])
def test_config_errors_are_one_line(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_backbone(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name, options", [
    ("resnet50", {}), ("resnet18", {}), ("plain18", {}), ("timm:resnet18", {}),
    ("custom", dict(block="basic", layers=[1, 1, 1, 1], widths=[8, 8, 16, 16], shortcut="A")),
])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_dilates_the_deepest_stages(name: str, options: dict, output_stride: int) -> None:
    """The declared strides are the real ones and the parameters the undilated network's (strict load both ways);
    the values are checked against smp's dilated encoder below."""
    backbone = build_backbone(name, output_stride=output_stride, **options)
    assert max(s.stride for s in backbone.feature_specs) == output_stride
    assert [s.name for s in backbone.feature_specs][-1] == "c5"  # names stay those of the undilated network
    assert_specs_match(backbone, 64)
    plain = build_backbone(name, **options)
    assert backbone.load_state_dict(plain.state_dict(), strict=True)  # same parameters, same names
    assert [s.channels for s in backbone.feature_specs] == [s.channels for s in plain.feature_specs]


@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_resnet_equals_smps_dilated_encoder(output_stride: int) -> None:
    """smp's ``make_dilated`` (stride 1, every conv of the stage dilated) is the reference, with torchvision's
    ResNet-50 weights loaded into both."""
    from segmentation_models_pytorch.encoders import get_encoder

    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
    ours = build_backbone("resnet50", output_stride=output_stride).eval()
    ours.load_state_dict(state, strict=True)
    ref = get_encoder("resnet50", weights=None, output_stride=output_stride).eval()
    ref.load_state_dict(state, strict=False)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        mine, theirs = ours(x), ref(x)
    # smp also dilates the 1x1 shortcut convs (a no-op that takes another kernel): equal to float rounding
    for name, k in (("c4", -2), ("c5", -1)):
        assert mine[name].shape == theirs[k].shape
        torch.testing.assert_close(mine[name], theirs[k], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(name="resnet50", output_stride=4), "output_stride must be one of [8, 16]"),
    (dict(name="resnet20", output_stride=8), "deepest stride is already 4"),
    (dict(name="timm:vit_tiny_patch16_224", output_stride=16), "timm:vit_tiny_patch16_224 cannot dilate"),
])
def test_output_stride_a_backbone_cannot_honour_is_one_line(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_backbone(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value) and str(info.value).startswith("output_stride")


def test_a_builder_without_output_stride_refuses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from resvision.backbone import registry

    monkeypatch.setitem(registry._BACKBONES, "no_dilation", lambda *, out_features=None, norm="bn": None)
    with pytest.raises(ConfigError, match="output_stride=16: backbone 'no_dilation' cannot dilate its stages"):
        build_backbone("no_dilation", output_stride=16)


def test_register_backbone_rejects_duplicates() -> None:
    with pytest.raises(ValueError):
        register_backbone("resnet18")(lambda **kw: None)


# ----------------------------------------------------------------------------- freezing
def _param_stage(name: str) -> int:
    """Stage index of a ResNet parameter name: 0 = stem, k = layer k."""
    top = name.split(".")[0]
    return int(top[len("layer"):]) if top.startswith("layer") else 0


def _bn_layers(module: nn.Module) -> dict[str, nn.BatchNorm2d]:
    return {n: m for n, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)}


def _stats(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.running_mean.clone() for n, m in _bn_layers(module).items()}


@pytest.mark.parametrize("k", [-1, 0, 2, 4])
def test_frozen_stages_grads(k: int) -> None:
    net = build_backbone("resnet18", frozen_stages=k)
    for name, p in net.named_parameters():
        assert p.requires_grad == (_param_stage(name) > k), name
    assert net.frozen_stage_indices == list(range(k + 1))


def test_frozen_stages_keep_bn_statistics_under_train() -> None:
    net = build_backbone("resnet18", frozen_stages=2)
    model = nn.Sequential(net)  # a parent's .train() must not wake the frozen stages up
    model.train()
    for name, bn in _bn_layers(net).items():
        assert bn.training == (_param_stage(name) > 2), name
    before = _stats(net)
    net(torch.randn(2, 3, 64, 64))
    after = _stats(net)
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == (_param_stage(name) > 2), name


def test_norm_eval_keeps_every_bn_fixed() -> None:
    net = build_backbone("resnet18", norm_eval=True).train()
    assert net.training and not any(bn.training for bn in _bn_layers(net).values())
    before = _stats(net)
    net(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(before[n], v) for n, v in _stats(net).items())


def test_unfreeze_restores_grads_and_train_mode() -> None:
    net = build_backbone("resnet18", frozen_stages=4)
    net.unfreeze_stages([3, 4])
    for name, p in net.named_parameters():
        assert p.requires_grad == (_param_stage(name) >= 3), name
    net.train()
    assert net.layer4[0].bn1.training and not net.layer2[0].bn1.training and not net.bn1.training
    with pytest.raises(ConfigError):
        net.unfreeze_stages([7])


def test_frozen_bn_has_no_trainable_norm() -> None:
    net = build_backbone("resnet50", norm="frozen_bn")
    assert not _bn_layers(net)
    assert isinstance(net.bn1, FrozenBatchNorm2d)
    convs = sum(m.weight.numel() for m in net.modules() if isinstance(m, nn.Conv2d))
    assert count_parameters(net) == convs  # only convolution weights are trainable


def test_stage_modules_partition_parameters() -> None:
    for net in (build_backbone("resnet18"), build_backbone("resnet20"), build_backbone("timm:resnet18"),
                build_backbone("timm:mobilenetv3_small_050")):
        ids = [id(p) for stage in net.stage_modules() for p in stage.parameters()]
        assert sorted(ids) == sorted(id(p) for p in net.parameters())  # each exactly once


def test_timm_freezing_and_deepcopy() -> None:
    net = build_backbone("timm:resnet18", frozen_stages=1)
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen and all(n.split(".")[1] in ("conv1", "bn1", "layer1") for n in frozen)
    clone = copy.deepcopy(net).train()  # EMA copies the model: freezing state must survive
    assert not clone.body.layer1[0].bn1.training and clone.body.layer2[0].bn1.training
