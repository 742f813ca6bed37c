"""The fine-tuning policy, parameter groups, optimizer and schedule — the same for every task.

The policy (which stages train, BN statistics, per-stage learning rates) is applied to the
task's registry Backbone (``task.backbone_of(model)``) and never to necks or heads, so a detector
and a classifier are fine-tuned with the same controls.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn

from ..config import FinetuneConfig, OptimConfig, SchedConfig
from ..errors import ConfigError


def apply_finetune_policy(backbone: nn.Module, policy: FinetuneConfig) -> None:
    """Freeze backbone stages and BN statistics as the policy says (call before building the optimizer).

    ``linear_probe`` freezes the whole backbone with frozen BN statistics, so only the task head
    learns (the standard probe of self-supervised / transfer papers); ``partial`` freezes the stem
    and stages ``1..frozen_stages``; ``full`` trains everything.
    """
    num_stages = len(backbone.stage_modules())
    if policy.strategy == "partial" and policy.frozen_stages < 0:
        raise ConfigError("finetune.strategy=partial needs finetune.frozen_stages >= 0 (0 = stem only)")
    if policy.strategy != "partial" and policy.frozen_stages >= 0:
        raise ConfigError(
            f"finetune.frozen_stages={policy.frozen_stages} needs finetune.strategy=partial "
            f"(strategy is {policy.strategy})"
        )
    if policy.frozen_stages >= num_stages:
        raise ConfigError(f"finetune.frozen_stages={policy.frozen_stages} but the backbone has stages 0..{num_stages - 1}")
    for epoch, stages in policy.unfreeze_at.items():
        bad = [s for s in stages if not 0 <= s < num_stages]
        if bad:
            raise ConfigError(f"finetune.unfreeze_at.{epoch}: stage {bad[0]} not in 0..{num_stages - 1}")
    if policy.strategy == "linear_probe":
        backbone.freeze_stages(num_stages - 1)
    elif policy.strategy == "partial":
        backbone.freeze_stages(policy.frozen_stages)
    backbone.norm_eval = policy.norm_eval or policy.strategy == "linear_probe"


def stages_to_unfreeze(policy: FinetuneConfig, epoch: int) -> list[int]:
    """Stage indices scheduled to unfreeze at the start of ``epoch`` (0-based)."""
    return sorted(set(policy.unfreeze_at.get(epoch, [])))


def param_groups(model: nn.Module, backbone: nn.Module, policy: FinetuneConfig, optim: OptimConfig,
                 head_lr_mults: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """Group parameters by (learning-rate scale, weight decay).

    Frozen parameters are included so that scheduled unfreezing only has to flip
    ``requires_grad``; optimizers skip parameters whose ``grad`` is None.
    Backbone stage ``i`` of ``n`` gets ``backbone_lr_mult * layer_decay ** (n - i)`` (the head is
    depth ``n``, as in BEiT's layer-wise decay); biases and norm weights (ndim <= 1) get no decay.
    ``head_lr_mults`` (``{id(parameter): multiplier}``, e.g. a joint run's per-head ``lr_mult``) scales parameters
    outside the backbone.
    Each group's ``lr`` starts scaled, so a plain loop or any torch scheduler (which takes each group's starting
    ``lr`` as its base) trains every stage at its rate; ``lr_scale`` and ``base_lr`` (the unscaled rate) are for
    :func:`build_scheduler`: timm's schedulers compute one LR from the base and multiply each group's scale in.
    """
    stages = backbone.stage_modules()
    stage_of = {id(p): i for i, stage in enumerate(stages) for p in stage.parameters()}
    backbone_ids = {id(p) for p in backbone.parameters()}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for param in model.parameters():
        scale = (head_lr_mults or {}).get(id(param), 1.0)
        if id(param) in backbone_ids:
            depth = stage_of.get(id(param), len(stages) - 1)
            scale = policy.backbone_lr_mult * (policy.layer_decay ** (len(stages) - depth) if policy.layer_decay else 1.0)
        decay = 0.0 if (optim.no_decay_norm_bias and param.ndim <= 1) else optim.weight_decay
        groups.setdefault((scale, decay), []).append(param)
    return [
        {"params": params, "lr_scale": scale, "weight_decay": decay, "lr": optim.lr * scale, "base_lr": optim.lr}
        for (scale, decay), params in groups.items()
    ]


def build_optimizer(model: nn.Module, backbone: nn.Module, policy: FinetuneConfig, optim: OptimConfig,
                    head_lr_mults: dict[int, float] | None = None) -> torch.optim.Optimizer:
    """Any timm optimizer (sgd, adamw, lamb, ...) over :func:`param_groups`."""
    extra = {"momentum": optim.momentum} if optim.name.lower().endswith(("sgd", "momentum", "lars", "lamb")) else {}
    try:
        return create_optimizer_v2(param_groups(model, backbone, policy, optim, head_lr_mults), opt=optim.name,
                                   lr=optim.lr, **extra)
    except (ValueError, AssertionError, KeyError) as err:
        raise ConfigError(f"optim.name={optim.name!r}: {str(err).splitlines()[0]}") from None


def build_scheduler(optimizer: torch.optim.Optimizer, sched: SchedConfig, updates_per_epoch: int, total_updates: int):
    """timm scheduler counted in optimizer updates (stepped with ``step_update`` after every update).

    Epoch-valued settings (warmup, decay epochs, milestones) are converted to updates so the same
    config means the same schedule at any batch size; ``total_updates`` honours ``train.max_iters``.
    """
    to_updates = lambda epochs: max(0, int(round(epochs * updates_per_epoch)))  # noqa: E731
    for group in optimizer.param_groups:  # timm's base: the unscaled LR (it multiplies lr_scale in itself)
        group.setdefault("initial_lr", group.get("base_lr", group["lr"]))
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=sched.name,
        num_epochs=total_updates,
        decay_epochs=max(1, to_updates(sched.decay_epochs)),
        decay_milestones=[to_updates(m) for m in sched.decay_milestones],
        decay_rate=sched.decay_rate,
        min_lr=sched.min_lr,
        warmup_lr=sched.warmup_lr,
        warmup_epochs=to_updates(sched.warmup_epochs),
        step_on_epochs=False,
        updates_per_epoch=1,
    )
    scheduler.step_update(0)  # apply warmup LR and per-group lr_scale before the first update
    return scheduler


def updates_per_epoch(num_batches: int, grad_accum: int) -> int:
    return max(1, num_batches // grad_accum)


def total_updates(epochs: int, per_epoch: int, max_iters: int | None) -> int:
    return max_iters if max_iters else epochs * per_epoch


def epochs_for(total: int, per_epoch: int) -> int:
    return math.ceil(total / per_epoch)
