"""The plain networks of He et al. 2016: the residual nets' layers without shortcuts, everywhere a backbone works."""

import pytest
import torch
from torch import nn

from resvision.backbone import build_backbone
from resvision.backbone.resnet import PLAIN_ARCHS, BasicBlock, Bottleneck, ResNetConfig
from resvision.backbone.zoo import zoo_row
from resvision.errors import ConfigError


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("plain", list(PLAIN_ARCHS))
def test_plain_net_has_the_residual_nets_layers_minus_the_projections(plain):
    residual_net, plain_net = build_backbone(PLAIN_ARCHS[plain]), build_backbone(plain)
    convs = lambda m: [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in m.modules()  # noqa: E731
                       if isinstance(c, nn.Conv2d)]
    projections = [m for m in residual_net.modules() if isinstance(m, (BasicBlock, Bottleneck)) and m.downsample is not None]
    projection_params = sum(_params(m.downsample) for m in projections)
    # the same layers in the same order, less the 1x1 projection convs of the residual net
    assert [c for c in convs(residual_net) if c[2] != (1, 1)] == convs(plain_net)
    assert _params(plain_net) == _params(residual_net) - projection_params
    if PLAIN_ARCHS[plain].startswith("resnet") and plain not in ("plain18", "plain34"):
        assert projection_params == 0  # CIFAR nets' option-A shortcuts carry no parameters: equal counts
    assert [s.channels for s in plain_net.feature_specs] == [s.channels for s in residual_net.feature_specs]
    assert [s.stride for s in plain_net.feature_specs] == [s.stride for s in residual_net.feature_specs]
    if plain in ("plain18", "plain20"):  # the zoo counts the same (one net of each family: the zoo is slow)
        assert zoo_row(plain)["params"] == zoo_row(PLAIN_ARCHS[plain])["params"] - projection_params


@pytest.mark.parametrize("block_cls, inplanes, planes", [(BasicBlock, 8, 8), (Bottleneck, 32, 8)])
def test_a_plain_block_adds_nothing(block_cls, inplanes, planes):
    """A plain block is relu(branch); the residual block with the same weights is relu(branch + x); and the
    plain block's graph has no addition at all."""
    torch.manual_seed(0)
    plain = block_cls(inplanes, planes, residual=False).eval()
    residual = block_cls(inplanes, planes).eval()
    residual.load_state_dict(plain.state_dict())
    x = torch.randn(2, inplanes, 6, 6)
    with torch.no_grad():
        h = torch.relu(plain.bn1(plain.conv1(x)))
        branch = plain.bn2(plain.conv2(h)) if block_cls is BasicBlock else plain.bn3(plain.conv3(torch.relu(plain.bn2(plain.conv2(h)))))
        torch.testing.assert_close(plain(x), torch.relu(branch), rtol=0, atol=0)
        torch.testing.assert_close(residual(x), torch.relu(branch + x))

    def adds(module):
        return [n for n in torch.fx.symbolic_trace(module).graph.nodes
                if n.op == "call_function" and "add" in getattr(n.target, "__name__", "")]

    assert adds(plain) == [] and len(adds(residual)) == 1


def test_plain_net_trains_in_a_task_and_refuses_zero_init_residual(tiny_folder, tmp_path):
    import json

    from conftest import tiny_overrides
    from resvision.cli import main

    with pytest.raises(ConfigError, match="zero_init_residual"):
        ResNetConfig(block="basic", layers=[1], shortcut="none", zero_init_residual=True).validate()
    out = tmp_path / "run"
    assert main(["train", "--task", "classification", *tiny_overrides(tiny_folder, out, "model.backbone.name=plain20",
                                                                     "train.epochs=1", "finetune.strategy=partial",
                                                                     "finetune.frozen_stages=1")]) == 0
    assert 0 <= json.loads((out / "report.json").read_text())["top1"] <= 1
    state = torch.load(out / "checkpoints/last.pt", weights_only=True)
    assert not any("downsample" in k for k in state["model"])  # no projection anywhere
