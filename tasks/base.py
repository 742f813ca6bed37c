"""The task contract: everything the Trainer and the command line may call on a task, and nothing else.

A task turns a :class:`~resvision.config.Config` into typed pieces: data (:class:`DataInfo`), a
model around a registry backbone, losses, an :class:`Evaluator`, reports and predictions. The
Trainer and ``cli.py`` talk to this interface only, so adding a task never touches them (see
``docs/architecture.md``, "Adding a task").

Data flows one way and is passed explicitly::

    data = task.build_datasets()            # DataInfo: datasets + class names + ground truth
    model = task.build_model(data)
    evaluator = task.build_evaluator(data)
    task.write_report(run_dir, model, evaluator, data, device)
    data = task.data_from_meta(checkpoint["meta"])   # prediction without the training data
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from ..engine import distributed as dist_utils
from ..errors import ConfigError, UserError
from .options import TaskOption


def _pinned(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.pin_memory()
    if isinstance(value, dict):
        return {k: _pinned(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_pinned(v) for v in value)
    return value


@dataclass
class Batch:
    """What a task's DataLoader yields (its ``collate_fn``): the images, and in subclasses what the task's steps need
    beside them (labels, boxes, masks, ...), by name. The Trainer moves every tensor field to the device."""

    images: torch.Tensor | list[torch.Tensor]  # (N, 3, H, W), or detection's list of (3, H, W)

    def pin_memory(self) -> "Batch":
        """What ``DataLoader(pin_memory=True)`` calls: every tensor page-locked, for faster copies to a GPU."""
        return dataclasses.replace(self, **{f.name: _pinned(getattr(self, f.name)) for f in dataclasses.fields(self)})


@dataclass
class DataInfo:
    """What :meth:`Task.build_datasets` returns: the datasets and what evaluation, reports and
    prediction need. Tasks subclass it to add their own ground truth (e.g. COCO category ids).

    Attributes:
        train: Training dataset; None when restored from a checkpoint for prediction.
        val: Validation dataset; None likewise.
        classes: Class names in the order of the model's outputs.
        skipped: Image files left out as unreadable (the run lists them in ``skipped.txt``).
    """

    train: Dataset | None = None
    val: Dataset | None = None
    classes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    #: Fields stored in checkpoints (plain lists / numbers), enough to predict without the data.
    meta_fields: ClassVar[tuple[str, ...]] = ("classes",)

    def meta(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.meta_fields}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "DataInfo":
        return cls(**{name: meta[name] for name in cls.meta_fields if name in meta})

    def fill_from_meta(self, meta: dict[str, Any]) -> None:
        """Take ``meta``'s value (a checkpoint's) of every meta field this data left empty (None, []): what
        evaluation-only data cannot know, e.g. the face verification threshold found in training."""
        for name in self.meta_fields:
            if getattr(self, name, None) in (None, []) and meta.get(name) not in (None, []):
                setattr(self, name, meta[name])


class Evaluator:
    """Accumulates predictions and turns them into metrics and report files.

    Subclasses list the per-sample lists they accumulate in ``state_fields``; :meth:`gather`
    merges those lists from every rank, so with a sharded (not padded) validation sampler each
    sample is counted exactly once.
    """

    state_fields: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        for name in self.state_fields:
            setattr(self, name, [])

    def update(self, predictions: Any, targets: Any) -> None:
        raise NotImplementedError

    def gather(self) -> None:
        """Replace the local state by the concatenation of every rank's state (no-op on one process)."""
        for name in self.state_fields:
            setattr(self, name, dist_utils.all_gather_list(getattr(self, name)))

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def metric_names(self) -> set[str] | None:
        """Every name :meth:`compute` can return on this data, known before any sample: a ``train.monitor`` that
        names none of them fails when the run starts, not at its first validation. ``None``: not known in advance."""
        return None

    def write_report(self, run_dir: str | Path) -> None:
        """Write JSON/CSV/PNG files under ``run_dir`` (rank 0 only)."""


class Task:
    """Glue between a config and the typed pieces of one task.

    ``backbone_of(model)`` must return a registry :class:`~resvision.backbone.Backbone`, so the
    fine-tuning policy can freeze, unfreeze and group its stages the same way for every task.
    Batches reach :meth:`training_step` / :meth:`evaluation_step` already on the model's device; the methods that
    make their own tensors (:meth:`predict`, :meth:`write_report`) are given the device.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""  # one line for --help
    ModelConfig: ClassVar[type]
    DataConfig: ClassVar[type]
    Data: ClassVar[type[DataInfo]] = DataInfo
    # packaged config name used by `--task NAME`, or (a plugin's) an absolute path to a YAML file
    default_config: ClassVar[str] = ""
    main_metric: ClassVar[str] = ""  # "": the first metric the evaluator computes
    main_metric_mode: ClassVar[str] = "max"
    predict_options: ClassVar[tuple[TaskOption, ...]] = ()
    results_format: ClassVar[str] = ""  # what `eval --predictions` scores (see load_results); "" = nothing

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    # ------------------------------------------------------------------ building
    def build_datasets(self, training: bool = True) -> DataInfo:
        """The data. With ``training=False`` (evaluation) the task may skip work that only training
        needs (e.g. decoding every training image); ``val`` must be complete either way."""
        raise NotImplementedError

    def data_from_meta(self, meta: dict[str, Any]) -> DataInfo:
        """The :class:`DataInfo` saved in a checkpoint (no datasets), for prediction."""
        return self.Data.from_meta(meta)

    def build_model(self, data: DataInfo) -> nn.Module:
        raise NotImplementedError

    def num_classes(self, data: DataInfo, what: str = "classes", source: str = "the data") -> int:
        """The model's output count: ``model.num_classes``, else the number of ``data.classes``; a one-line
        ConfigError when neither says or when they disagree (the classes named)."""
        configured = getattr(self.cfg.model, "num_classes", None)
        if not data.classes and not configured:
            raise ConfigError(f"model.num_classes is unknown: set it or give {source} {what}")
        if data.classes and configured and configured != len(data.classes):
            names = ", ".join(map(str, data.classes[:5])) + (", ..." if len(data.classes) > 5 else "")
            raise ConfigError(f"model.num_classes={configured} but {source} has {len(data.classes)} {what} ({names})")
        return configured or len(data.classes)

    def backbone_of(self, model: nn.Module) -> nn.Module:
        """The registry Backbone inside ``model`` (the fine-tuning policy acts on it alone)."""
        return model.backbone

    def head_lr_mults(self, model: nn.Module) -> dict[int, float]:
        """``{id(parameter): learning-rate multiplier}`` for parameters outside the backbone (joint runs: each head's
        ``lr_mult``); default: none (every head parameter at ``optim.lr``)."""
        return {}

    def collate_fn(self) -> Callable | None:
        """Samples -> one batch (a :class:`Batch` subclass for the built-in tasks); None: torch's default collate."""
        return None

    def build_evaluator(self, data: DataInfo) -> Evaluator:
        raise NotImplementedError

    # ------------------------------------------------------------------ steps
    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Forward one batch and return named losses; the Trainer back-propagates their sum."""
        raise NotImplementedError

    def evaluation_step(self, model: nn.Module, batch: Any) -> tuple[Any, Any]:
        """Forward one batch in eval mode; return ``(predictions, targets)`` for the evaluator."""
        raise NotImplementedError

    # ------------------------------------------------------------------ results
    def write_report(self, run_dir: Path, model: nn.Module, evaluator: Evaluator, data: DataInfo,
                     device: torch.device) -> None:
        """Report files after an evaluation (the evaluator's tables and plots; tasks add pictures made with ``model``,
        which lives on ``device``)."""
        evaluator.write_report(run_dir)

    def predict(self, model: nn.Module, paths: list[Any], data: DataInfo, device: torch.device,
                **options: Any) -> list[dict[str, Any]]:
        """One result per image (a file path, or any image ``datasets.as_rgb`` takes: PIL, numpy, tensor): a
        :class:`~resvision.tasks.result.Result` (a dict, JSON-able through ``to_dict()``, with the task's attributes
        and picture) or a plain dict; ``"image"`` names it (``datasets.image_label``); ``device``: where ``model``
        is (the inputs go there); ``options`` are the task's :attr:`predict_options`."""
        raise UserError(self.unsupported("predict"))

    def write_predictions(self, results: list[dict[str, Any]], out_dir: Path, data: DataInfo) -> list[Path]:
        """``predictions.json`` (each result's record, with the names of its files under ``"files"``) and each
        result's own files (:meth:`Result.save <resvision.tasks.result.Result.save>`: its picture, ...); tasks add
        tables (e.g. CSV). Returns the paths written."""
        from .result import Result, unique_stems

        out_dir.mkdir(parents=True, exist_ok=True)
        written, records = [], []
        pictured = [r for r in results if isinstance(r, Result)]
        stems = dict(zip(map(id, pictured), unique_stems(pictured)))
        for r in results:
            if isinstance(r, Result):
                files = r.save(out_dir, stems[id(r)])
                written += files
                records.append(r.to_dict() | {"files": [f.name for f in files]})
            else:
                records.append(r)
        path = out_dir / "predictions.json"
        path.write_text(json.dumps(records, indent=2))
        return [path, *written]

    def load_results(self, path: str | Path, data: DataInfo) -> Evaluator:
        """An evaluator holding the predictions of an external results file (:attr:`results_format`),
        ready to ``compute``."""
        raise UserError(self.unsupported("scoring a predictions file"))

    # ------------------------------------------------------------------ deploy (resvision.deploy)
    #: ``--postprocess`` choices: extra steps in the exported graph a consumer may want (e.g. softmax).
    onnx_postprocess: ClassVar[tuple[str, ...]] = ("none",)
    #: Parity checks between the torch model and the exported file: ``{name: ("<=" | ">=", limit)}``.
    #: Default: the largest |torch - onnx| over the output's scale, max(1, largest |torch|), so a model whose
    #: logits are in the thousands is held to the same relative float32 precision as one near 1.
    onnx_parity_limits: ClassVar[dict[str, tuple[str, float]]] = {"max_diff_vs_scale": ("<=", 1e-4)}
    #: Input axes that vary between calls besides the batch: ``{axis: name}`` (e.g. height and width).
    onnx_dynamic_axes: ClassVar[dict[int, str]] = {}
    #: Whether the graph takes a batch (``(N, 3, H, W)``) or one image (detection: ``(3, H, W)``).
    onnx_batched: ClassVar[bool] = True
    #: ``export --quantize int8``: name prefixes of the graph nodes to quantize (the exporter names a node after
    #: its module, e.g. ``/model/backbone/...``); the rest stays float32. Empty: every node ONNX Runtime can.
    int8_scopes: ClassVar[tuple[str, ...]] = ()
    #: Whether ``export --quantize int8`` is built for the task's graph (a joint file of several inputs: not yet).
    onnx_int8: ClassVar[bool] = True

    @property
    def int8_metrics(self) -> tuple[str, ...]:
        """The metrics ``export --quantize int8`` reports for both files (those the evaluator computes)."""
        return (self.main_metric,)

    def onnx_output_names(self, postprocess: str = "none") -> tuple[str, ...]:
        """Names of :meth:`export_module`'s outputs, in order."""
        return ("logits",)

    def onnx_inputs(self, dynamic_batch: bool = True) -> dict[str, dict[int, str]]:
        """The graph's inputs, in :meth:`export_module`'s argument order, with their free axes: one ``images`` input
        (its batch axis free when ``dynamic_batch`` and :attr:`onnx_batched`, plus :attr:`onnx_dynamic_axes`)."""
        batch = {0: "batch"} if dynamic_batch and self.onnx_batched else {}
        return {"images": {**batch, **self.onnx_dynamic_axes}}

    def onnx_outputs(self, postprocess: str = "none", dynamic_batch: bool = True) -> dict[str, dict[int, str]]:
        """:meth:`onnx_output_names` with their free axes (the batch, or a one-image graph's detections)."""
        batch = {0: "batch"} if dynamic_batch and self.onnx_batched else {}
        return {name: dict(batch) if self.onnx_batched else {0: "detections"}
                for name in self.onnx_output_names(postprocess)}

    def example_images(self, args: tuple[torch.Tensor, ...]) -> int:
        """How many images one :meth:`export_examples` argument tuple holds (the parity report counts them)."""
        return int(args[0].shape[0]) if self.onnx_batched else 1

    def export_module(self, model: nn.Module, postprocess: str = "none") -> nn.Module:
        """The eval-mode module to trace: ``images -> tensor or tuple of tensors`` named
        :meth:`onnx_output_names`. Default: the model itself (its ``forward`` is what evaluation runs)."""
        return model

    def export_examples(self, batch: Any, model: nn.Module) -> list[tuple[torch.Tensor, ...]]:
        """Argument tuples of :meth:`export_module` from one validation batch (traced and parity-checked on)."""
        return [(batch.images if isinstance(batch, Batch) else batch[0],)]

    def onnx_model(self, runner: Any) -> nn.Module:
        """A module that runs an exported file (``runner``: :class:`resvision.deploy.OnnxRunner`) and is called
        the way :meth:`evaluation_step` and :meth:`predict` call the torch model."""
        from ..deploy.runtime import OnnxModel

        return OnnxModel(runner)

    def parity(self, reference: dict[str, torch.Tensor], exported: dict[str, torch.Tensor]) -> dict[str, float]:
        """How far the exported file's outputs are from the torch module's on the same inputs (both by output
        name); the keys are those of :attr:`onnx_parity_limits`."""
        diff = max(float((reference[k].float() - exported[k].float()).abs().max()) for k in reference)
        scale = max(1.0, *(float(reference[k].float().abs().max()) for k in reference))
        return {"max_diff_vs_scale": diff / scale, "max_abs_diff": diff}

    def set_export_size(self, size: tuple[int, int]) -> None:
        """``export --image-size H W``. A graph with free height / width (:attr:`onnx_dynamic_axes`) is only traced
        at that size. A fixed-size graph takes that size, so the config stored with the file must make its
        preprocessing produce it: ``data.image_size`` becomes H (square crops: H = W) and ``data.resize`` scales
        with it."""
        d = self.cfg.data
        if self.onnx_dynamic_axes or not hasattr(d, "image_size") or (size[0], size[1]) == (d.image_size,) * 2:
            return
        if size[0] != size[1]:
            raise UserError(f"--image-size {size[0]} {size[1]}: task {self.name} takes square inputs "
                            "(data.image_size); give H = W")
        if getattr(d, "resize", None) is not None:
            d.resize = round(d.resize * size[0] / d.image_size)
        d.image_size = size[0]

    def preprocessing(self, model: nn.Module) -> dict[str, Any]:
        """What a consumer of the exported file does to an RGB image before the graph (stored in its metadata,
        where :meth:`onnx_model` may read it back: ``runner.info["preprocessing"]``)."""
        d = self.cfg.data
        steps = {k: getattr(d, k) for k in ("image_size", "resize", "mean", "std") if hasattr(d, k)}
        return {"input": "RGB, float32, NCHW, pixel values / 255, then (x - mean) / std per channel", **steps}

    @classmethod
    def unsupported(cls, what: str) -> str:
        return f"task {cls.name} does not support {what}"

    # ------------------------------------------------------------------ helpers
    @classmethod
    def options_of(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Keep the given (non-None) options, checked; an option of another task is a one-line error."""
        accepted = {o.name: o for o in cls.predict_options}
        for name, value in given.items():
            if value is not None and name not in accepted:
                raise UserError(f"--{name.replace('_', '-')} does not apply to task {cls.name}")
            if value is not None:
                accepted[name].check(value)
        return {k: v for k, v in given.items() if v is not None}

