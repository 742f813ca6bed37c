"""``modes.eval_mode``: eval mode inside the block, the previous mode after it, also after an exception."""

import pytest
from torch import nn

from resvision.modes import eval_mode


def _model(training: bool) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout()).train(training)


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("training", [True, False], ids=["was-training", "was-eval"])
def test_eval_mode_restores_the_previous_mode_after_the_block(training):
    model = _model(training)
    with eval_mode(model) as inside:
        assert inside is model
        assert not any(_modes(model))
    assert _modes(model) == [training] * 4


@pytest.mark.parametrize("training", [True, False], ids=["was-training", "was-eval"])
def test_eval_mode_restores_the_previous_mode_after_an_exception(training):
    model = _model(training)
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            assert not any(_modes(model))
            raise RuntimeError("boom")
    assert _modes(model) == [training] * 4


def test_eval_mode_gives_a_backbone_its_frozen_batchnorm_back():
    from resvision.backbone import build_backbone

    net = build_backbone("resnet18", norm_eval=True).train()
    before = _modes(net)
    assert net.training and not all(before)  # BatchNorm layers stay in eval mode under .train()
    with eval_mode(net):
        assert not any(_modes(net))
    assert _modes(net) == before
