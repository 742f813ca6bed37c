"""Gradient-flow monitor (``train.monitor_gradients: true``): per stage, how large the gradients are and how
far each update moves the weights, so vanishing and exploding gradients show up while a run trains.

Every ``train.monitor_every`` optimizer steps, for each stage of the backbone (stem, layer1 ... layerS) and for
the rest of the model (``head``: neck, decoder, classifier):

- ``grad_norm/<stage>``: L2 norm of the stage's gradients (after AMP unscaling, before clipping and the step);
- ``update_ratio/<stage>``: ||w_after - w_before|| / ||w_before|| over the stage's weights: the relative change
  one optimizer step makes (~1e-3 is the usual healthy order of magnitude for SGD / Adam).

Rows go to ``metrics.jsonl`` (``split: "gradients"``) and TensorBoard (``gradients/...``); at the end
``plots/gradient_flow.png`` shows both per stage over training. A one-line warning fires once per stage when its
gradients vanish (norm below ``vanish_ratio`` x the head's for ``patience`` checks in a row) or explode
(non-finite, or above ``explode_factor`` x the stage's running median), naming the remedies the engine has.
"""

from __future__ import annotations

import logging
import math
import statistics
from typing import TYPE_CHECKING, Any

import torch

from . import distributed as dist_utils
from .callbacks import Callback, MetricsLogger

if TYPE_CHECKING:
    from .trainer import Trainer

log = logging.getLogger("resvision")

REMEDIES = ("gradient clipping (train.clip_grad=1.0), a lower learning rate (optim.lr), warmup "
            "(sched.warmup_epochs), BatchNorm (model.backbone.norm=bn), or shortcuts (a residual backbone)")


class GradientFlowMonitor(Callback):
    def __init__(self, every: int = 10, vanish_ratio: float = 1e-4, explode_factor: float = 100.0,
                 patience: int = 3) -> None:
        self.every, self.vanish_ratio, self.explode_factor, self.patience = every, vanish_ratio, explode_factor, patience
        self.rows: list[dict[str, Any]] = []
        self.history: dict[str, list[float]] = {}
        self.low_streak: dict[str, int] = {}
        self.warned: set[str] = set()
        self._before: dict[str, list[torch.Tensor]] | None = None
        self._grads: dict[str, float] = {}

    # ------------------------------------------------------------------ stages
    @staticmethod
    def stages(trainer: Trainer) -> dict[str, list[torch.nn.Parameter]]:
        """``{"stem": [...], "layer1": [...], ..., "head": [...]}``: the trainable parameters of each backbone
        stage, then everything else in the model."""
        backbone = trainer.task.backbone_of(trainer.model)
        modules = backbone.stage_modules()
        names = ["stem", *(f"layer{i}" for i in range(1, len(modules)))]
        groups, seen = {}, set()
        for name, module in zip(names, modules):
            params = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in params)
            if params:
                groups[name] = params
        head = [p for p in trainer.model.parameters() if p.requires_grad and id(p) not in seen]
        if head:
            groups["head"] = head
        return groups

    def _due(self, trainer: Trainer) -> bool:
        # global_step is the step about to be taken when called before it, the one taken after
        return trainer.global_step % self.every == 0

    # ------------------------------------------------------------------ events
    def on_before_optimizer_step(self, trainer: Trainer) -> None:
        if not self._due(trainer):
            self._before = None
            return
        groups = self.stages(trainer)
        self._grads = {}
        for name, params in groups.items():
            squares = [p.grad.detach().float().pow(2).sum() for p in params if p.grad is not None]
            self._grads[name] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
        self._before = {name: [p.detach().clone() for p in params] for name, params in groups.items()}

    def on_step_end(self, trainer: Trainer) -> None:
        if self._before is None:
            return
        groups = self.stages(trainer)
        row: dict[str, Any] = {}
        for name, before in self._before.items():
            after = groups.get(name, [])
            delta = math.sqrt(sum(float((a.detach().float() - b.float()).pow(2).sum()) for a, b in zip(after, before)))
            weight = math.sqrt(sum(float(b.float().pow(2).sum()) for b in before))
            row[f"grad_norm/{name}"] = self._grads[name]
            row[f"update_ratio/{name}"] = delta / weight if weight > 0 else 0.0
        self._before = None
        self.rows.append({"step": trainer.global_step, **row})
        self._check(trainer.global_step, row)
        for callback in trainer.callbacks:
            if isinstance(callback, MetricsLogger):
                callback.write(trainer, "gradients", row)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.rows and dist_utils.is_main_process():
            from ..reports import plot_gradient_flow

            plot_gradient_flow(self.rows, trainer.run_dir / "plots" / "gradient_flow.png")

    # ------------------------------------------------------------------ warnings
    def _check(self, step: int, row: dict[str, Any]) -> None:
        norms = {k.split("/", 1)[1]: v for k, v in row.items() if k.startswith("grad_norm/")}
        head = norms.get("head")
        for name, norm in norms.items():
            if name in self.warned:
                continue
            past = self.history.setdefault(name, [])
            if not math.isfinite(norm):
                self._warn(name, f"gradients of {name} are {norm} at step {step} (exploding)")
                continue
            if len(past) >= self.patience and norm > self.explode_factor * max(statistics.median(past), 1e-12):
                self._warn(name, f"gradients of {name} exploded at step {step}: norm {norm:.3g}, "
                                 f"{norm / statistics.median(past):.0f}x its running median")
            if head and name != "head":
                low = norm < self.vanish_ratio * head
                self.low_streak[name] = self.low_streak.get(name, 0) + 1 if low else 0
                if self.low_streak[name] >= self.patience:
                    self._warn(name, f"gradients of {name} vanish: norm {norm:.3g} is below {self.vanish_ratio:g} x "
                                     f"the head's ({head:.3g}) for {self.patience} checks in a row (step {step})")
            past.append(norm)

    def _warn(self, name: str, message: str) -> None:
        self.warned.add(name)
        if dist_utils.is_main_process():
            log.warning("%s; remedies: %s", message, REMEDIES)
