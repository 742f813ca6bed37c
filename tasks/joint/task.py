"""Joint runs: one registry backbone shared by the heads of several tasks (``task: classification+face``).

A joint config names its heads in ``task`` (``a+b``, two or more distinct built-in or plugin tasks) and lists them
under ``tasks:``, each with its own ``model`` (head options), ``data``, loss ``weight`` and ``lr_mult`` (its head's
learning rate as a multiple of ``optim.lr``; the shared backbone follows ``finetune``); ``model.backbone``,
``train``, ``optim``, ``sched`` and ``finetune`` are shared::

    task: classification+face
    model: {backbone: {name: resnet20}}
    tasks:
      classification: {data: {format: digits}, weight: 1.0}
      face: {model: {embedding_size: 64}, data: {image_size: 32}, weight: 0.5}

Each head keeps its own data pipeline (its dataset, augmentation and collate): a training step takes one batch of
every head, runs each through the shared backbone and its head, and sums the heads' weighted losses (an epoch is the
largest head's training set; the smaller ones cycle). Every head is evaluated on its own validation data; the
report holds every head's metrics under prefixed keys (``face/verif_acc``) and each head writes its single-task
report files into ``<run>/<head>/``. ``export`` writes one ONNX file with an input per head (``onnx.py``). The
same-input single pass (one backbone forward for heads that share a batch) is not built yet.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from ...config import CONFIG_DIR, BackboneConfig, check_config, setting
from ...datasets import as_rgb, image_label
from ...datasets.detection_transforms import detection_transforms
from ...engine.callbacks import monitor_terms
from ...errors import ConfigError, UserError
from ...modes import eval_mode
from ...reports import save_image_grid
from ..base import DataInfo, Evaluator, Task
from ..detection.results import detection_result, draw_boxes, image_tensor
from ..result import Result, captioned
from ..segmentation.results import overlay, segmentation_result
from .onnx import JointExport
from .shared import (
    SHARED_PASS_HEADS,
    SharedBatch,
    SharedInputDataset,
    collate_shared,
    pair_by_image,
    shared_losses,
    shared_outputs,
)

SEPARATOR = "+"
HEAD_KEYS = ("model", "data", "weight", "lr_mult")


@dataclass
class JointModelConfig:
    backbone: BackboneConfig = setting(factory=BackboneConfig, help="the backbone every head shares")


@dataclass
class JointDataConfig:
    """Each head's data is its ``tasks.<head>.data`` section; this one says whether the heads share their input."""

    same_input: bool = setting(False, "detection+segmentation: one dataset (the heads' images paired by file name), "
                                      "one image batch and one backbone forward per step for both heads (shared.py)")


# ------------------------------------------------------------------ data
@dataclass
class JointDataInfo(DataInfo):
    """Every head's :class:`DataInfo` (``heads``); ``train`` / ``val`` combine their datasets."""

    heads: dict[str, DataInfo] = field(default_factory=dict)

    meta_fields = ("heads",)

    def meta(self) -> dict[str, Any]:
        return {"heads": {name: data.meta() for name, data in self.heads.items()}}

    def fill_from_meta(self, meta: dict[str, Any]) -> None:
        for name, data in self.heads.items():
            data.fill_from_meta(meta.get("heads", {}).get(name, {}))


class CycledHeads(Dataset):
    """Training: item ``i`` is ``{head: that head's sample i mod its length}``; the largest set sets the length."""

    def __init__(self, parts: dict[str, Dataset]) -> None:
        self.parts = parts
        self.length = max(len(p) for p in parts.values())

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {name: part[index % len(part)] for name, part in self.parts.items()}

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts.values():
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)


class InterleavedHeads(Dataset):
    """Validation: every head's samples once, the heads taking turns (so the first batches hold every head: what the
    export checks its parity on): item ``i`` is ``{head: sample}``."""

    def __init__(self, parts: dict[str, Dataset]) -> None:
        self.parts = parts
        self.order = [(name, k) for k in range(max(len(p) for p in parts.values()))
                      for name, p in parts.items() if k < len(p)]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, k = self.order[index]
        return {name: self.parts[name][k]}


@dataclass
class JointBatch:
    """One batch per head present (``heads``: name -> that task's own batch)."""

    heads: dict[str, Any]


# ------------------------------------------------------------------ model
class JointModel(nn.Module):
    """The shared registry backbone (``backbone``) and one task model per head (``heads``), each of which holds that
    same backbone module. Called with a :class:`JointBatch` it returns the heads' weighted losses (so that DDP sees one
    forward per step)."""

    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module], steps: dict[str, tuple[Task, float]]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.steps = steps  # head -> (its task, its loss weight): plain attributes, not weights

    def forward(self, batch: JointBatch | SharedBatch) -> dict[str, torch.Tensor]:
        if isinstance(batch, SharedBatch):
            segmentation = self.steps["segmentation"][0]
            per_head = shared_losses(self, batch, segmentation, segmentation.cfg.data.ignore_index)
        else:
            per_head = {name: self.steps[name][0].training_step(self.heads[name], part)
                        for name, part in batch.heads.items()}
        return {f"{name}/{k}": self.steps[name][1] * v for name, losses in per_head.items() for k, v in losses.items()}

    def shared_outputs(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The shared pass on one image (``shared.shared_outputs``): its detections and segmentation logits."""
        return shared_outputs(self, image)


def share_backbone(model: nn.Module, backbone_of: Callable[[nn.Module], nn.Module], shared: nn.Module) -> None:
    """Replace the registry backbone inside ``model`` (where ``backbone_of`` finds it) by ``shared``."""
    own = backbone_of(model)
    for name, module in model.named_modules():
        if module is own:
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, shared)
            return
    raise ConfigError("a head's backbone is not a submodule of its model: it cannot be shared")


# ------------------------------------------------------------------ evaluation
class JointEvaluator(Evaluator):
    """Every head's evaluator; metrics under ``<head>/<metric>``."""

    def __init__(self, heads: dict[str, Evaluator]) -> None:
        self.heads = heads
        super().__init__()

    def reset(self) -> None:
        for evaluator in self.heads.values():
            evaluator.reset()

    def update(self, predictions: dict[str, Any], targets: dict[str, Any]) -> None:
        for name, predicted in predictions.items():
            self.heads[name].update(predicted, targets[name])

    def gather(self) -> None:
        for evaluator in self.heads.values():
            evaluator.gather()

    def metric_names(self) -> set[str] | None:
        heads = {name: evaluator.metric_names() for name, evaluator in self.heads.items()}
        if any(names is None for names in heads.values()):
            return None
        return {f"{name}/{k}" for name, names in heads.items() for k in names}

    def compute(self) -> dict[str, float]:
        return {f"{name}/{k}": v for name, evaluator in self.heads.items() for k, v in evaluator.compute().items()}


class JointResult(Result):
    """Every head's result for one image (``heads``: name -> that task's result). ``r["shared_pass"]`` lists the heads
    whose results came from one backbone pass (``data.same_input``); the others each ran on their own input."""

    picture = "heads"

    def __init__(self, record: dict[str, Any], source: Any, heads: dict[str, Any]) -> None:
        super().__init__(record, source)
        self.heads = heads

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "shared_pass": self["shared_pass"],
                **{name: _record(r) for name, r in self.heads.items()}}

    def plot(self) -> np.ndarray:
        """A shared pass's boxes and mask in one picture (the mask's colours under the boxes); else the heads'
        pictures side by side (each at the height of the tallest)."""
        if self["shared_pass"]:
            boxes, masks = self.heads["detection"], self.heads["segmentation"]
            rgb = overlay(self.rgb(), masks.mask, masks.palette)
            scale = max(1, -(-640 // rgb.shape[1]))  # as DetectionResult.plot: captions stay readable
            return draw_boxes(rgb.repeat(scale, 0).repeat(scale, 1), np.zeros((0, 4)), boxes.boxes * scale,
                              [f"{d['label']} {d['score']:.2f}" for d in boxes["detections"]])
        pictures = [r.plot() if isinstance(r, Result) else captioned(self.rgb(), []) for r in self.heads.values()]
        height = max(p.shape[0] for p in pictures)
        return np.concatenate([np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255)
                               for p in pictures], axis=1)


def _record(result: Any) -> dict[str, Any]:
    record = result.to_dict() if isinstance(result, Result) else dict(result)
    record.pop("image", None)
    return record


# ------------------------------------------------------------------ the task
class JointTask(JointExport, Task):
    """Several tasks' heads on one backbone (see the module docstring). The class of a given combination comes from
    :func:`joint_task_class` (``tasks.get_task_class("a+b")``)."""

    description = "several tasks' heads on one shared backbone (task: a+b, heads listed under tasks:)"
    ModelConfig = JointModelConfig
    DataConfig = JointDataConfig
    Data = JointDataInfo
    head_names: tuple[str, ...] = ()
    task_class: Callable[[str], type[Task]]  # the task table's lookup (handed over: tasks/ imports this module)

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        given = cfg.tasks or {}
        if not isinstance(given, dict) or set(given) != set(self.head_names) or len(given) != len(self.head_names):
            listed = ", ".join(map(str, given)) if isinstance(given, dict) else repr(given)
            raise ConfigError(f"tasks: task {cfg.task} needs one entry per head ({', '.join(self.head_names)}), "
                              f"got {listed or 'none'}")
        shared = dataclasses.asdict(cfg.model.backbone)
        common = {k: dataclasses.asdict(getattr(cfg, k)) for k in ("train", "optim", "sched", "finetune")}
        self.heads: dict[str, Task] = {}
        self.weights: dict[str, float] = {}
        self.lr_mults: dict[str, float] = {}  # each head's parameters (not the shared backbone) at lr_mult x optim.lr
        for name in self.head_names:
            entry = given[name] if given[name] is not None else {}
            if not isinstance(entry, dict):
                raise ConfigError(f"tasks.{name}: expected a mapping of {', '.join(HEAD_KEYS)}, got {entry!r}")
            unknown = sorted(set(entry) - set(HEAD_KEYS))
            if unknown:
                raise ConfigError(f"unknown config key 'tasks.{name}.{unknown[0]}' (valid: {', '.join(HEAD_KEYS)})")
            model = dict(entry.get("model") or {})
            if "backbone" in model:
                raise ConfigError(f"tasks.{name}.model.backbone: the heads share model.backbone; set it there")
            for key in ("weight", "lr_mult"):
                value = entry.get(key, 1.0)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                    raise ConfigError(f"tasks.{name}.{key}: must be a number > 0, got {value!r}")
            raw = {"task": name, "model": {**model, "backbone": shared}, "data": entry.get("data") or {},
                   "name": cfg.name, "output_dir": cfg.output_dir, "output": cfg.output, **common}
            try:
                sub = check_config(raw, self.task_class)
            except ConfigError as err:
                raise ConfigError(f"tasks.{name}: {err}") from None
            self.heads[name] = self.task_class(name)(sub)
            self.weights[name] = float(entry.get("weight", 1.0))
            self.lr_mults[name] = float(entry.get("lr_mult", 1.0))
        if cfg.train.monitor:  # its heads are known now, before any data is read; their metric names once it is
            for _, metric in monitor_terms(cfg.train.monitor):
                if metric.split("/")[0] not in self.heads:
                    raise ConfigError(f"train.monitor={cfg.train.monitor!r}: {metric!r} names no head of this run (a "
                                      f"joint run's metrics are <head>/<metric>; heads: {', '.join(self.heads)})")
        self.same_input = cfg.data.same_input
        if self.same_input:
            for name in self.head_names:
                if name not in SHARED_PASS_HEADS:
                    raise ConfigError(f"data.same_input: the {name} head cannot share one input pass with the others "
                                      f"(it reads its own inputs, e.g. face's aligned crops at its image_size); the "
                                      f"heads that can: {', '.join(SHARED_PASS_HEADS)}")

    # ------------------------------------------------------------------ building
    def build_datasets(self, training: bool = True) -> JointDataInfo:
        heads = {name: task.build_datasets(training) for name, task in self.heads.items()}
        if self.same_input:
            return self._shared_datasets(heads, training)
        train = CycledHeads({n: d.train for n, d in heads.items()}) if all(d.train is not None for d in heads.values()) \
            else None
        return JointDataInfo(train, InterleavedHeads({n: d.val for n, d in heads.items()}),
                             skipped=[p for d in heads.values() for p in d.skipped], heads=heads)

    def _shared_datasets(self, heads: dict[str, DataInfo], training: bool) -> JointDataInfo:
        """One dataset for both heads of the shared pass: the detection splits, each image with its mask."""
        boxes, masks = heads["detection"], heads["segmentation"]
        d = self.heads["detection"].cfg.data
        augment = detection_transforms(True, hflip=d.hflip, scale_jitter=tuple(d.scale_jitter),
                                       color_jitter=d.color_jitter, min_visibility=d.min_visibility,
                                       mask_fill=masks.ignore_index)
        seed = self.cfg.train.seed

        def paired(split: str, train: bool) -> SharedInputDataset:
            b, m = (boxes.train, masks.train) if train else (boxes.val, masks.val)
            return SharedInputDataset(b.data, m.data, pair_by_image(b.data, m.data, split),
                                      augment if train else detection_transforms(False), train=train, seed=seed)

        return JointDataInfo(paired("train", True) if training else None, paired("val", False),
                             skipped=[p for d in heads.values() for p in d.skipped], heads=heads)

    def data_from_meta(self, meta: dict[str, Any]) -> JointDataInfo:
        stored = meta.get("heads", {})
        return JointDataInfo(heads={n: t.data_from_meta(stored.get(n, {})) for n, t in self.heads.items()})

    def build_model(self, data: JointDataInfo) -> JointModel:
        models = {name: task.build_model(data.heads[name]) for name, task in self.heads.items()}
        first = self.head_names[0]
        shared = self.heads[first].backbone_of(models[first])
        for name in self.head_names[1:]:
            own = self.heads[name].backbone_of(models[name])
            if [dataclasses.astuple(s) for s in own.feature_specs] != [dataclasses.astuple(s) for s in shared.feature_specs]:
                raise ConfigError(f"tasks.{name}: its head needs backbone features {[s.name for s in own.feature_specs]} "
                                  f"with other settings than {first}'s ({[s.name for s in shared.feature_specs]}): "
                                  "the heads cannot share one backbone")
            share_backbone(models[name], self.heads[name].backbone_of, shared)
        return JointModel(shared, models, {n: (t, self.weights[n]) for n, t in self.heads.items()})

    def backbone_of(self, model: nn.Module) -> nn.Module:
        return model.backbone

    def head_lr_mults(self, model: nn.Module) -> dict[int, float]:
        shared = {id(p) for p in model.backbone.parameters()}
        return {id(p): self.lr_mults[name] for name, head in model.heads.items() for p in head.parameters()
                if id(p) not in shared}

    def collate_fn(self) -> Callable:
        if self.same_input:
            return collate_shared
        collates = {name: task.collate_fn() or default_collate for name, task in self.heads.items()}

        def collate(samples: list[dict[str, Any]]) -> JointBatch:
            return JointBatch({name: collates[name]([s[name] for s in samples if name in s])
                               for name in self.head_names if any(name in s for s in samples)})

        return collate

    def build_evaluator(self, data: JointDataInfo) -> JointEvaluator:
        return JointEvaluator({name: task.build_evaluator(data.heads[name]) for name, task in self.heads.items()})

    # ------------------------------------------------------------------ steps
    def training_step(self, model: nn.Module, batch: JointBatch) -> dict[str, torch.Tensor]:
        return model(batch)

    def evaluation_step(self, model: nn.Module, batch: JointBatch | SharedBatch) -> tuple[dict[str, Any], dict[str, Any]]:
        if isinstance(batch, SharedBatch):
            return self._shared_evaluation_step(model, batch)
        predictions, targets = {}, {}
        for name, part in batch.heads.items():
            predictions[name], targets[name] = self.heads[name].evaluation_step(model.heads[name], part)
        return predictions, targets

    def _shared_evaluation_step(self, model: nn.Module, batch: SharedBatch):
        """Each image alone through the shared pass (module ``shared``): detections for the detection evaluator,
        masks at the image's size (padded to the batch's largest with ``ignore_index``, never scored) for the
        segmentation evaluator."""
        ignore = self.heads["segmentation"].cfg.data.ignore_index
        h = max(m.shape[0] for m in batch.masks)
        w = max(m.shape[1] for m in batch.masks)
        masks = torch.full((len(batch.masks), h, w), ignore, dtype=torch.long)
        predicted = torch.full_like(masks, 0)
        detections = []
        for k, (image, mask) in enumerate(zip(batch.images, batch.masks)):
            found, logits = model.shared_outputs(image)
            detections.append({n: v.float().cpu() if v.is_floating_point() else v.cpu() for n, v in found.items()})
            masks[k, :mask.shape[0], :mask.shape[1]] = mask.cpu()
            predicted[k, :mask.shape[0], :mask.shape[1]] = logits.argmax(1)[0].cpu()
        return ({"detection": detections, "segmentation": predicted},
                {"detection": [{k: v.cpu() if torch.is_tensor(v) else v for k, v in t.items()} for t in batch.targets],
                 "segmentation": masks})

    # ------------------------------------------------------------------ results
    def write_report(self, run_dir: Path, model: nn.Module, evaluator: JointEvaluator, data: JointDataInfo,
                     device: torch.device) -> None:
        """Each head's single-task report (its report.json, tables and plots) in ``<run>/<head>/``; with
        ``data.same_input`` the segmentation head's protocol states the shared pass, and ``<run>/plots/predictions.png``
        shows the first validation images' boxes and masks from it (the segmentation head's own picture, made with
        its sliding-window inference, is not drawn)."""
        for name, task in self.heads.items():
            out = Path(run_dir) / name
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.json").write_text(json.dumps(evaluator.heads[name].compute(), indent=2))
            if self.same_input and name == "segmentation":
                evaluator.heads[name].inference = SHARED_PROTOCOL
                evaluator.heads[name].write_report(out)
            else:  # the shared pass (an exported one has no heads) hands none: detection's report reads its evaluator
                head = None if self.same_input else model.heads[name]
                task.write_report(out, head, evaluator.heads[name], data.heads[name], device)
        if self.same_input and data.val is not None and len(data.val):
            self._shared_picture(Path(run_dir) / "plots" / "predictions.png", model, data, device)

    def _shared_picture(self, path: Path, model: nn.Module, data: JointDataInfo, device: torch.device) -> None:
        """The first validation images: ground truth (boxes in green, mask colours) beside the shared pass's
        prediction (boxes >= 0.5 in red with class and score, mask colours), enlarged 2x so the captions read."""
        masks = data.heads["segmentation"]
        palette = masks.palette()
        samples = [data.val.samples[k] for k in range(min(6, len(data.val)))]
        with eval_mode(model):
            results = self._shared_predict(model, [s.image_path for s in samples], data, device)
        images, captions = [], []
        for k, (sample, result) in enumerate(zip(samples, results)):
            rgb, truth = result.rgb(), data.val[k]["segmentation"][1].numpy()
            found = result.heads["detection"]
            pair = [draw_boxes(overlay(rgb, truth, palette), sample.boxes, np.zeros((0, 4)), []),
                    draw_boxes(overlay(rgb, result.heads["segmentation"].mask, palette), np.zeros((0, 4)), found.boxes,
                               [f"{d['label']} {d['score']:.2f}" for d in found["detections"]])]
            images += [p.repeat(2, 0).repeat(2, 1) for p in pair]
            captions += [f"{Path(sample.image_path).stem}: ground truth", f"{Path(sample.image_path).stem}: prediction"]
        save_image_grid(images, captions, path, "Validation images: ground truth and one backbone pass's boxes and mask",
                        cols=4, legend={name: palette[i] for i, name in enumerate(masks.classes) if i})

    def predict(self, model: nn.Module, paths: list[Any], data: JointDataInfo, device: torch.device,
                **options: Any) -> list[JointResult]:
        """Every head's result per image: from one backbone pass with ``data.same_input``, else each head on its own
        preprocessing (its own pass through the backbone)."""
        if self.same_input:
            return self._shared_predict(model, paths, data, device, options.get("score_thresh", 0.5))
        per_head = {}
        for name, task in self.heads.items():
            mine = {o.name for o in task.predict_options}
            per_head[name] = task.predict(model.heads[name], paths, data.heads[name], device,
                                          **{k: v for k, v in options.items() if k in mine})
        return [JointResult({"image": rows[0]["image"], "shared_pass": [],
                             **{n: _record(r) for n, r in zip(per_head, rows)}}, path, dict(zip(per_head, rows)))
                for path, rows in zip(paths, zip(*per_head.values()))]

    @torch.inference_mode()
    def _shared_predict(self, model: nn.Module, paths: list[Any], data: JointDataInfo, device: torch.device,
                        score_thresh: float = 0.5) -> list[JointResult]:
        """Boxes and mask of each image from one backbone pass (module ``shared``)."""
        boxes, masks = data.heads["detection"], data.heads["segmentation"]
        palette = masks.palette()
        results = []
        for index, path in enumerate(paths):
            found, logits = model.shared_outputs(image_tensor(as_rgb(path), device))
            heads = {"detection": detection_result(found, path, index, boxes, score_thresh),
                     "segmentation": segmentation_result(logits.argmax(1)[0].cpu().numpy(), path, index, masks, palette)}
            heads = {name: heads[name] for name in self.head_names}
            results.append(JointResult({"image": image_label(path, index), "shared_pass": list(self.head_names),
                                        **{n: _record(r) for n, r in heads.items()}}, path, heads))
        return results



SHARED_PROTOCOL = ("argmax of the logits of each image alone from the joint model's shared pass (data.same_input): "
                   "the detector's input (resized to the detection head's min_size / max_size, normalised, padded to "
                   "a multiple of 32), the logits cropped to the resized image and upsampled bilinearly to the "
                   "image's own size; no sliding window, no flip. The same as predict.")

_CLASSES: dict[str, type[JointTask]] = {}


def joint_task_class(name: str, task_class: Callable[[str], type[Task]]) -> type[JointTask]:
    """The :class:`JointTask` subclass for ``"a+b"``: two or more distinct tasks, none of them joint itself."""
    if name not in _CLASSES:
        parts = name.split(SEPARATOR)
        if len(parts) < 2 or "" in parts:
            raise ConfigError(f"task {name!r}: a joint task names two or more tasks joined by '+' (e.g. "
                              "classification+face)")
        twice = sorted({p for p in parts if parts.count(p) > 1})
        if twice:
            raise ConfigError(f"task {name!r}: {twice[0]!r} is named twice; each head appears once")
        for part in parts:
            task_class(part)  # an unknown task: its one-line error, with close matches
        first = task_class(parts[0])
        packaged = sorted(p.stem for p in (CONFIG_DIR / name).glob("*.yaml"))
        _CLASSES[name] = type("JointTask", (JointTask,), {
            "name": name, "head_names": tuple(parts), "default_config": f"{name}/{packaged[0]}" if packaged else "",
            "task_class": staticmethod(task_class),
            # best.pt follows the first head's main metric
            "main_metric": f"{first.name}/{first.main_metric}" if first.main_metric else "",
            "main_metric_mode": first.main_metric_mode,
            "predict_options": tuple(o for p in parts for o in task_class(p).predict_options)})
    return _CLASSES[name]


def extract_head(checkpoint: str | Path, head: str, output: str | Path | None = None) -> Path:
    """Write one head of a joint checkpoint, with the shared backbone, as a single-task checkpoint (``output``,
    default ``<checkpoint stem>_<head>.pt`` beside it) that every single-task tool loads: its weights (and EMA
    weights), its config (the head's ``model`` / ``data`` with the shared backbone, train, optim, ...), its meta and
    its metrics without the prefix. Optimizer and schedule states are not carried (a fine-tuning run starts anew)."""
    from ...engine.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(checkpoint)
    heads = str(state.get("task", "")).split(SEPARATOR)
    if len(heads) < 2:
        raise UserError(f"{checkpoint} is a single-task {state.get('task')!r} checkpoint: it has no heads to extract")
    if head not in heads:
        raise UserError(f"{checkpoint} has no head {head!r} (its heads: {', '.join(heads)})")
    config = {k: v for k, v in state["config"].items() if k != "tasks"}
    entry = state["config"]["tasks"][head] or {}
    config.update(task=head, model={**(entry.get("model") or {}), "backbone": config["model"]["backbone"]},
                  data=entry.get("data") or {})
    prefix = f"heads.{head}."

    def own(weights: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        return None if weights is None else {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}

    single = {"model": own(state["model"]), "task": head, "backbone": state["backbone"], "config": config,
              "meta": state["meta"]["heads"][head], "epoch": state.get("epoch"), "global_step": state.get("global_step"),
              "metrics": {k.split("/", 1)[1]: v for k, v in (state.get("metrics") or {}).items()
                          if k.startswith(head + "/")},
              "extracted_from": str(checkpoint)}
    if state.get("ema") is not None:
        single["ema"] = own(state["ema"])
    path = Path(output) if output else Path(checkpoint).with_name(f"{Path(checkpoint).stem}_{head}.pt")
    if path.exists():
        raise UserError(f"{path} exists: choose another --output")
    return save_checkpoint(single, path)
