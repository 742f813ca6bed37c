"""Gradient-flow monitor: per-stage figures checked against a hand computation, its warnings on broken nets,
and the rows / plot of a real run."""

import json
import logging
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_overrides
from resvision.backbone import build_backbone
from resvision.engine.gradient_flow import GradientFlowMonitor
from resvision.tasks.classification import ImageClassifier


def _stub(model, step=0):
    """The parts of a Trainer the monitor reads."""
    return SimpleNamespace(model=model, task=SimpleNamespace(backbone_of=lambda m: m.backbone), callbacks=[],
                           global_step=step, run_dir=None)


def test_figures_equal_a_hand_computation():
    torch.manual_seed(0)
    model = ImageClassifier(build_backbone("resnet20"), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([1, 2, 3, 4])
    F.cross_entropy(model(x), y).backward()
    monitor, trainer = GradientFlowMonitor(every=1), _stub(model)
    monitor.on_before_optimizer_step(trainer)
    stages = {"stem": [model.backbone.conv1, model.backbone.bn1], "layer1": [model.backbone.layer1],
              "layer2": [model.backbone.layer2], "layer3": [model.backbone.layer3], "head": [model.fc]}
    params = {k: [p for m in mods for p in m.parameters()] for k, mods in stages.items()}
    grads = {k: torch.cat([p.grad.flatten() for p in ps]).norm().item() for k, ps in params.items()}
    before = {k: torch.cat([p.detach().flatten() for p in ps]).clone() for k, ps in params.items()}
    opt.step()
    trainer.global_step = 1
    monitor.on_step_end(trainer)
    row = monitor.rows[0]
    assert sorted(k.split("/")[1] for k in row if k.startswith("grad_norm/")) == sorted(stages)
    for k in stages:
        after = torch.cat([p.detach().flatten() for p in params[k]])
        assert row[f"grad_norm/{k}"] == pytest.approx(grads[k], rel=1e-5)
        assert row[f"update_ratio/{k}"] == pytest.approx(((after - before[k]).norm() / before[k].norm()).item(), rel=1e-4)
        # SGD without momentum: the update is lr x gradient
        assert row[f"update_ratio/{k}"] * before[k].norm().item() == pytest.approx(0.1 * grads[k], rel=1e-4)


def test_warns_once_on_exploding_and_non_finite_gradients(caplog):
    monitor = GradientFlowMonitor(every=1, patience=3, explode_factor=100)
    caplog.set_level(logging.WARNING, logger="resvision")
    for step, norm in enumerate([1.0, 1.2, 0.9, 1.1, 500.0, 600.0]):
        monitor._check(step, {"grad_norm/layer1": norm, "grad_norm/head": 1.0})
    explode = [r for r in caplog.records if "exploded" in r.message]
    assert len(explode) == 1 and "layer1" in explode[0].message and "step 4" in explode[0].message
    assert "train.clip_grad" in explode[0].message and "\n" not in explode[0].message
    monitor._check(7, {"grad_norm/stem": math.nan, "grad_norm/head": 1.0})
    assert any("stem" in r.message and "nan" in r.message for r in caplog.records)


def test_plain110_with_a_bad_init_vanishes_and_the_resnet_does_not(tiny_folder, tmp_path, caplog):
    """A deliberately broken net: plain-110 with every conv scaled to 0.8x of He init and no normalisation to undo
    it (norm=frozen_bn: identity at init); across 109 layers the signal shrinks ~0.8^109 ~ 3e-11, its early stages'
    gradients vanish and the monitor says so. The control, a healthy ResNet-56 (BN, He init), gets no warning."""
    from resvision import Trainer, build_task, load_config

    caplog.set_level(logging.WARNING, logger="resvision")
    warnings = {}
    for name, norm in (("plain110", "frozen_bn"), ("resnet56", "bn")):
        cfg = load_config("classification", tiny_overrides(tiny_folder, tmp_path / name, f"model.backbone.name={name}",
                                                           f"model.backbone.norm={norm}", "train.monitor_gradients=true",
                                                           "train.gradient_monitor_every=1", "train.epochs=1"))
        trainer = Trainer(build_task(cfg))
        trainer.setup()
        if name == "plain110":
            with torch.no_grad():
                for m in trainer.model.backbone.modules():
                    if isinstance(m, torch.nn.Conv2d):
                        m.weight.mul_(0.8)
        caplog.clear()
        trainer.fit()
        warnings[name] = [r.message for r in caplog.records if "vanish" in r.message]
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        gradients = [r for r in rows if r["split"] == "gradients"]
        assert len(gradients) == trainer.global_step and "update_ratio/layer3" in gradients[0]
        assert (tmp_path / name / "plots/gradient_flow.png").is_file()
    assert warnings["plain110"] and "stem" in warnings["plain110"][0] and "remedies" in warnings["plain110"][0]
    assert warnings["resnet56"] == []
