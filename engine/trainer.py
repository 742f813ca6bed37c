"""The one training loop every task runs through.

``Trainer(task).fit()`` builds the task's data and model, applies the fine-tuning policy, and runs
an explicit epoch loop: AMP, gradient accumulation and clipping, EMA, channels_last, optional
torch.compile, DDP under torchrun, exact resume. Tasks only supply ``training_step`` /
``evaluation_step`` (see ``tasks/base.py``: the engine knows the contract, never a task);
callbacks do the bookkeeping.
"""

from __future__ import annotations

import dataclasses
import contextlib
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..config import save_config
from ..errors import CheckpointError, ConfigError, UserError
from ..modes import eval_mode
from . import distributed as dist_utils
from .callbacks import (Callback, Checkpointer, CurvePlotter, DivergenceWatch, EarlyStopping, MetricsLogger,
                        PlainProgress, ScheduledUnfreeze, monitor_terms, monitored_value)
from .checkpoint import check_compatible, holds_results, load_checkpoint, load_model_state
from .optim import apply_finetune_policy, build_optimizer, build_scheduler, epochs_for, total_updates, updates_per_epoch

log = logging.getLogger("resvision")


class TrainingDiverged(UserError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks this process's GPU under torchrun (LOCAL_RANK) or the CPU."""
    if name == "auto":
        name = f"cuda:{dist_utils.local_rank()}" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device={name} but CUDA is not available (use train.device=cpu)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"train.device={name} but this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"train.device={name} but MPS is not available (use train.device=cpu)")
    return device


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 where the GPU supports it, else fp16; off on CPU, where bf16 matmul is far
    slower than fp32 on most processors (measure before turning it on)."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[mode]


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """``batch`` with every tensor moved to ``device`` (in dataclasses such as a task's ``Batch``, lists, tuples and
    dicts); 4-D tensors (image batches) in channels_last layout when asked. The one place batches change device."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.dim() == 4 and batch.is_floating_point():
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: to_device(getattr(batch, f.name), device, channels_last)
                                             for f in dataclasses.fields(batch) if f.init})
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_callbacks(cfg) -> list[Callback]:
    """The callbacks every run has, as its config asks (the gradient-flow monitor with ``train.monitor_gradients``)."""
    callbacks: list[Callback] = [ScheduledUnfreeze(), MetricsLogger(cfg.train.log_every), Checkpointer(cfg.train.checkpoint_every),
                                 DivergenceWatch()]
    if cfg.train.progress and not sys.stderr.isatty():
        callbacks.append(PlainProgress())
    if cfg.train.early_stop_patience:
        callbacks.append(EarlyStopping(cfg.train.early_stop_patience))
    if cfg.train.monitor_gradients:
        from .gradient_flow import GradientFlowMonitor

        callbacks.append(GradientFlowMonitor(cfg.train.gradient_monitor_every))
    callbacks.append(CurvePlotter())
    return callbacks


class Trainer:
    """Fit and evaluate any task.

    Args:
        task: a :class:`~resvision.tasks.Task` (``resvision.build_task(cfg)``); its ``cfg`` is the run's config.
        callbacks: extra callbacks, run after the default ones.
        resume: checkpoint to resume from; ``"auto"`` = ``<run_dir>/checkpoints/last.pt``.
    """

    def __init__(self, task, callbacks: list[Callback] | None = None, resume: str | Path | None = None) -> None:
        cfg = task.cfg
        self.cfg = cfg
        self.task = task
        self.callbacks = default_callbacks(cfg) + list(callbacks or [])
        self.resume = resume
        self.run_dir = cfg.run_dir
        self.monitor = cfg.train.monitor or self.task.main_metric
        if self.monitor:
            monitor_terms(self.monitor)  # a malformed one fails now, not at the first validation
        self.monitor_mode = cfg.train.monitor_mode or self.task.main_metric_mode
        self.epoch = self.start_epoch = self.global_step = 0
        self.best: dict[str, Any] = {"value": None, "epoch": -1, "stale": 0}
        self.metrics: dict[str, float] = {}
        self.step_losses: dict[str, float] = {}
        self.epoch_losses: dict[str, float] = {}
        self.epoch_seconds = 0.0
        self.should_stop = self.improved = False
        self._built = False

    # ------------------------------------------------------------------ setup
    def _setup_runtime(self) -> None:
        train = self.cfg.train
        self.device = resolve_device(train.device)
        dist_utils.init_from_env(self.device)
        self.amp_dtype = resolve_amp(train.amp, self.device)
        if train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def _claim_run_dir(self) -> None:
        """Never overwrite a finished or interrupted run: an explicit ``--output`` that holds one is
        an error; a default ``runs/<task>/<name>`` moves on to ``<name>-2``, ``<name>-3``, ...
        Written only after the model and data were built, so a bad config leaves no directory."""
        if self.resume:
            return
        taken = lambda d: (d / "checkpoints" / "last.pt").exists()  # noqa: E731
        if self.cfg.output and taken(self.run_dir):
            raise UserError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose another --output")
        name = self.cfg.name
        for i in range(2, 10_000):
            if not taken(self.cfg.run_dir):
                break
            self.cfg.name = f"{name}-{i}"
        self.cfg.name = dist_utils.broadcast_object(self.cfg.name)
        self.run_dir = self.cfg.run_dir
        if dist_utils.is_main_process():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
            log.info("training into %s", self.run_dir)

    def _build_model(self) -> None:
        seed_everything(self.cfg.train.seed)  # same initial weights on every rank
        self.model = self.task.build_model(self.data)
        self.backbone = self.task.backbone_of(self.model)
        built = getattr(self.backbone, "registry_name", self.cfg.model.backbone.name)
        if built != self.cfg.model.backbone.name:  # its checkpoints could not be rebuilt from their config
            raise ConfigError(f"the model's backbone is {built!r} but model.backbone.name is "
                              f"{self.cfg.model.backbone.name!r}: build it from the config (build_backbone_from_config"
                              "(cfg.model.backbone)), or register the head with rv.register_head and set model.head")
        apply_finetune_policy(self.backbone, self.cfg.finetune)
        self.model.to(self.device)
        if self.cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ema = None
        if self.cfg.train.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=self.cfg.train.ema_decay)

    def _wrap_model(self) -> None:
        """DDP registers only the parameters that require grad, so it is rebuilt after unfreezing."""
        model: nn.Module = self.model
        if dist_utils.is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        if self.cfg.train.compile:
            model = torch.compile(model)
        self.train_model = model

    def _build_loaders(self, for_training: bool, meta: dict[str, Any] | None = None) -> None:
        train = self.cfg.train
        self.data = self.task.build_datasets(training=for_training)
        if meta:
            self.data.fill_from_meta(meta)
        self.train_set, self.val_set = self.data.train, self.data.val
        common = dict(
            num_workers=train.num_workers,
            collate_fn=self.task.collate_fn(),
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,  # fresh workers see the dataset's new epoch (augmentation seeds)
        )
        self.val_loader = DataLoader(
            self.val_set, batch_size=train.batch_size, sampler=dist_utils.ShardSampler(len(self.val_set)), **common
        )
        if not for_training:
            return
        if self.train_set is None or len(self.train_set) == 0:
            raise UserError("the training set is empty")
        # DistributedSampler even on one process: the shuffled order depends only on (seed, epoch),
        # so N processes see the same global batches as one process with N x the batch.
        self.train_sampler = DistributedSampler(
            self.train_set, num_replicas=dist_utils.world_size(), rank=dist_utils.rank(), shuffle=True, seed=train.seed
        )
        per_rank = len(self.train_sampler)
        # A last batch of one sample cannot train BatchNorm (BatchNorm1d refuses it): dropped too.
        drop_last = per_rank >= 2 * train.batch_size or (per_rank > 1 and per_rank % train.batch_size == 1)
        self.train_loader = DataLoader(
            self.train_set, batch_size=train.batch_size, sampler=self.train_sampler, drop_last=drop_last, **common,
        )

    def _plan_schedule(self) -> None:
        """The run's length in updates and epochs (``train.max_iters`` decides when set), checked against the
        scheduled unfreezing before anything is written."""
        train = self.cfg.train
        self.updates_per_epoch = updates_per_epoch(len(self.train_loader), train.grad_accum)
        self.total_updates = total_updates(train.epochs, self.updates_per_epoch, train.max_iters)
        self.epochs = epochs_for(self.total_updates, self.updates_per_epoch) if train.max_iters else train.epochs
        late = [e for e in self.cfg.finetune.unfreeze_at if not 0 <= e < self.epochs]
        if late:
            raise ConfigError(f"finetune.unfreeze_at.{late[0]}: epoch {late[0]} is not in 0..{self.epochs - 1} (this run "
                              f"has {self.epochs} epochs, counted from 0), so it would never happen")

    def _build_optimization(self) -> None:
        self.optimizer = build_optimizer(self.model, self.backbone, self.cfg.finetune, self.cfg.optim,
                                         self.task.head_lr_mults(self.model))
        self.scheduler = build_scheduler(self.optimizer, self.cfg.sched, self.updates_per_epoch, self.total_updates)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def setup(self, for_training: bool = True, meta: dict[str, Any] | None = None) -> None:
        """Build everything once (idempotent); called by :meth:`fit` and :meth:`evaluate` (``meta``: the
        checkpoint's, filling what evaluation data leaves empty, e.g. the training classes)."""
        if self._built:
            return
        if for_training and self.resume:
            self.resume = self._resume_path(self.resume)  # fail before any expensive building
        self._setup_runtime()
        self._build_loaders(for_training, meta)  # first: the data decides the number of classes
        self._build_model()
        self.evaluator = self.task.build_evaluator(self.data)
        if for_training:
            self._check_monitor()
            self._plan_schedule()
            self._claim_run_dir()
            self._build_optimization()
            if self.resume:
                self._load_resume(self.resume)
        self._wrap_model()
        self._built = True

    def _check_monitor(self) -> None:
        """A ``train.monitor`` term that names no metric of this run fails before anything is written, not at the
        first validation (an evaluator that cannot list its metrics in advance is checked then)."""
        known = self.evaluator.metric_names()
        if not self.monitor or known is None:
            return
        for _, name in monitor_terms(self.monitor):
            if name not in known:
                raise ConfigError(f"train.monitor={self.monitor!r}: {name!r} is not a metric of this run "
                                  f"({', '.join(sorted(known))})")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, schedule, scaler, counters."""
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch + 1,
            "global_step": self.global_step,
            "best": dict(self.best),
            "metrics": dict(self.metrics),
            "task": self.cfg.task,
            "backbone": getattr(self.backbone, "registry_name", self.cfg.model.backbone.name),
            "config": self.cfg.to_dict(),
            "meta": self.data.meta(),
        }

    def _resume_path(self, resume: str | Path) -> Path:
        path = self.run_dir / "checkpoints" / "last.pt" if str(resume) == "auto" else Path(resume)
        if not path.is_file():
            raise CheckpointError(f"--resume: no checkpoint at {path}")
        return path

    def _load_resume(self, path: Path) -> None:
        state = load_checkpoint(path)
        check_compatible(state, path, self.cfg.task, self.cfg.model.backbone.name)
        load_model_state(self.model, state["model"], path)
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.global_step = state["epoch"], state["global_step"]
        self.best, self.metrics = dict(state["best"]), dict(state.get("metrics", {}))
        self.data.fill_from_meta(state.get("meta", {}))  # e.g. the face threshold found by an evaluation before the kill
        log.info("resumed from %s at epoch %d (step %d)", path, self.start_epoch, self.global_step)

    def unfreeze(self, stages: list[int]) -> None:
        self.backbone.unfreeze_stages(stages)
        self.model.train(self.model.training)
        if hasattr(self, "train_model"):
            self._wrap_model()

    # ------------------------------------------------------------------ loop
    def _call(self, event: str) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def lr(self) -> float:
        return max(group["lr"] for group in self.optimizer.param_groups)

    @property
    def is_last_epoch(self) -> bool:
        return self.epoch + 1 >= self.epochs or self.global_step >= self.total_updates

    @property
    def evaluations_since_best(self) -> int:
        return self.best["stale"]

    def fit(self) -> dict[str, float]:
        """Train, evaluate every ``eval_every`` epochs, write checkpoints and reports.

        Returns:
            The final validation metrics (also written to ``report.json``).
        """
        self.setup()
        self._call("on_train_start")
        for epoch in range(self.start_epoch, self.epochs):
            self.epoch = epoch
            self._begin_epoch(epoch)
            self._call("on_epoch_start")
            self.train_one_epoch()
            self.improved = False
            if (epoch + 1) % self.cfg.train.eval_every == 0 or self.is_last_epoch:
                self.metrics = self.validate()
                self._track_best()
                self._call("on_validation_end")
            self._call("on_epoch_end")
            if self.should_stop or self.global_step >= self.total_updates:
                break
        self._finish()
        self._call("on_train_end")
        return self.metrics

    def _begin_epoch(self, epoch: int) -> None:
        # Every source of randomness is a function of (seed, epoch, rank): resuming at an epoch
        # boundary replays exactly what an uninterrupted run would have done.
        seed_everything(self.cfg.train.seed + 1000 * epoch + dist_utils.rank())
        self.train_sampler.set_epoch(epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)

    def train_one_epoch(self) -> None:
        train = self.cfg.train
        self.train_model.train()
        sums: dict[str, float] = {}
        count, start = 0, time.perf_counter()
        batches = self._progress(self.train_loader, f"epoch {self.epoch + 1}/{self.epochs}")
        for i, batch in enumerate(batches):
            batch = to_device(batch, self.device, train.channels_last)
            update = (i + 1) % train.grad_accum == 0
            sync = contextlib.nullcontext() if update or not isinstance(self.train_model, DistributedDataParallel) else self.train_model.no_sync()
            with sync:
                with self._autocast():
                    losses = self.task.training_step(self.train_model, batch)
                loss = sum(losses.values())
                self._check_finite(loss, i)
                self.scaler.scale(loss / train.grad_accum).backward()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            count += 1
            if not update:
                continue
            self._optimizer_step()
            self.step_losses = {k: float(v.detach()) for k, v in losses.items()} | {"loss": float(loss.detach())}
            if hasattr(batches, "set_postfix"):
                batches.set_postfix(loss=f"{self.step_losses['loss']:.4f}", lr=f"{self.lr:.2e}")
            self._call("on_step_end")
            if self.global_step >= self.total_updates:
                break
        self.epoch_batches = count
        self.epoch_losses = {k: v / max(count, 1) for k, v in sums.items()}
        self.epoch_losses["loss"] = sum(self.epoch_losses.values())
        self.epoch_seconds = time.perf_counter() - start

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)  # true gradients for callbacks and clipping (no-op without AMP scaling)
        self._call("on_before_optimizer_step")
        if self.cfg.train.clip_grad:
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.train.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        self.scheduler.step_update(self.global_step)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def _check_finite(self, loss: torch.Tensor, batch_index: int) -> None:
        value = dist_utils.reduce_mean(loss.detach().float())  # all ranks decide together
        if not torch.isfinite(value):
            last = self.run_dir / "checkpoints" / "last.pt"
            kept = f"last good checkpoint: {last}" if last.exists() else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"loss is {value.item()} at epoch {self.epoch + 1} batch {batch_index} (optimizer step "
                f"{self.global_step}, lr {self.lr:.3g}); try a lower optim.lr, sched.warmup_epochs or train.clip_grad; "
                f"{kept}"
            )

    def _progress(self, iterable, desc: str):
        """A tqdm bar on a terminal; elsewhere (a log file) the PlainProgress callback prints one line per epoch."""
        if not (self.cfg.train.progress and dist_utils.is_main_process() and sys.stderr.isatty()):
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)

    @property
    def eval_model(self) -> nn.Module:
        """EMA weights when EMA is on (what gets evaluated, checkpointed as best and exported)."""
        return self.ema.module if self.ema is not None else self.model

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        """Evaluate on the validation split; every rank returns the same metrics.

        Under DDP each rank's BatchNorm running statistics have seen only its own batches; rank 0's
        are the ones saved in checkpoints, so they are broadcast first: every rank then evaluates
        the model that ``last.pt`` holds, and the report equals a later ``eval`` of that file.
        """
        model = self.eval_model
        dist_utils.broadcast_buffers(model)
        self.evaluator.reset()
        with eval_mode(model):
            for batch in self._progress(self.val_loader, "validate"):
                batch = to_device(batch, self.device, self.cfg.train.channels_last)
                with self._autocast():
                    predictions, targets = self.task.evaluation_step(model, batch)
                self.evaluator.update(predictions, targets)
        self.evaluator.gather()
        metrics = self.evaluator.compute() if dist_utils.is_main_process() else None
        return dist_utils.broadcast_object(metrics)

    def _track_best(self) -> None:
        if not self.monitor:  # a task that names no main metric: its evaluator's first
            self.monitor = next(iter(self.metrics))
        value = monitored_value(self.monitor, self.metrics)
        best = self.best["value"]
        better = best is None or (value > best if self.monitor_mode == "max" else value < best)
        self.improved = bool(better)
        if better:
            self.best = {"value": value, "epoch": self.epoch, "stale": 0}
        else:
            self.best["stale"] += 1

    def _finish(self) -> None:
        """report.json (final metrics + best) and the task's report files, on rank 0, after every
        rank is done training (the others then wait at the final barrier, see cli.main)."""
        dist_utils.barrier()
        if not dist_utils.is_main_process():
            return
        report = dict(self.metrics)
        report.update({f"best_{self.monitor}": self.best["value"], "best_epoch": self.best["epoch"] + 1})
        report.update({"epochs": self.epoch + 1, "steps": self.global_step})
        self._write_results(self.run_dir, report, self.eval_model)

    def _write_results(self, out_dir: Path, report: dict[str, Any], model: nn.Module) -> None:
        """report.json, the skipped-image list, then the task's report files. Plots come last and
        can never fail a finished run: metrics and checkpoints are already on disk."""
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(report, indent=2))
        if self.data.skipped:
            (out_dir / "skipped.txt").write_text("".join(f"{path}\n" for path in self.data.skipped))
            log.warning("%d images skipped (list in %s)", len(self.data.skipped), out_dir / "skipped.txt")
        try:
            self.task.write_report(out_dir, model, self.evaluator, self.data, self.device)
        except Exception as err:  # noqa: BLE001 - a plot must not lose a finished run
            log.warning("report files incomplete (%s: %s); report.json and checkpoints are written",
                        type(err).__name__, err)

    # ------------------------------------------------------------------ evaluation only
    def evaluate(self, checkpoint: str | Path | None = None, state: dict[str, Any] | None = None,
                 runtime: nn.Module | None = None) -> dict[str, float]:
        """Evaluate ``checkpoint`` (its EMA weights when present; ``state`` when already read) on
        the validation split and write report.json and the task's report into ``cfg.run_dir``.

        ``runtime``: a module that runs the checkpoint's model elsewhere (``task.onnx_model``: an exported
        file in ONNX Runtime); it is evaluated and reported on instead, and ``state`` needs no weights.

        Raises UserError when ``cfg.run_dir`` holds a training run or a report: nothing is replaced
        (``engine.checkpoint.results_dir``, the rule ``rv.evaluate`` and the CLI's ``eval`` apply, picks a new
        ``<run>/eval/<timestamp>/`` folder).
        """
        if holds_results(self.run_dir):
            raise UserError(f"{self.run_dir} already holds a run or a report: evaluating into it would replace its "
                            f"report.json; set cfg.output to another folder (e.g. {self.run_dir / 'eval'})")
        if checkpoint is not None and state is None:
            state = load_checkpoint(checkpoint)
        if checkpoint is not None:
            check_compatible(state, checkpoint, self.cfg.task, self.cfg.model.backbone.name)
        self.setup(for_training=False, meta=state.get("meta") if state is not None else None)
        self.ema = None  # the checkpoint's EMA weights (if any) are loaded into the model itself
        if runtime is not None:
            self.model = runtime
        elif checkpoint is not None:
            load_model_state(self.model, state.get("ema") or state["model"], checkpoint)
        self.metrics = self.validate()
        dist_utils.barrier()
        if dist_utils.is_main_process():
            self._write_results(self.run_dir, dict(self.metrics), self.model)
            log.info("evaluation report: %s", self.run_dir / "report.json")
        return self.metrics
