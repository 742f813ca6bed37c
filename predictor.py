"""A trained model, ready to predict: ``rv.load(path)`` -> :class:`Predictor`.

This is the one way a checkpoint (``.pt``) or an exported file (``.onnx``) becomes a model that predicts: the CLI's
``predict`` uses it too, so the library and the command line give the same results on the same images.

>>> import resvision as rv
>>> predictor = rv.load("runs/classification/resnet20_digits/checkpoints/best.pt")
>>> results = predictor(["photo.jpg", pil_image, numpy_hwc_uint8, chw_float_tensor])
>>> results[0].label, results[0].score            # the record: results[0]["topk"]; results[0].to_dict()
>>> results[0].plot()                              # an RGB array: the picture `predict` writes
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

from .errors import UserError

__all__ = ["Predictor", "expand_inputs", "export", "load", "load_for_export", "model_from_checkpoint", "onnx_module",
           "read_source", "resolve_engine"]


def read_source(path: str | Path, overrides: Sequence[str] = (), config: str | Path | None = None,
                allow_unverified: bool = False, task: str | None = None) -> tuple[dict[str, Any], Any]:
    """``(state, cfg)`` of a checkpoint or an exported file: its stored state (for ``.onnx``: the metadata, no
    weights) and the config that rebuilds its model (``engine.checkpoint.checkpoint_config``).

    An ``.onnx`` file exported with an extra graph step (``--postprocess``) or whose parity check failed at export
    is refused (the latter unless ``allow_unverified``): its outputs are not what the task's code reads. ``task``:
    the task the file must belong to.
    """
    from .engine.checkpoint import checkpoint_config, load_checkpoint
    from .tasks import get_task_class

    if not Path(path).is_file():
        raise UserError(f"no such checkpoint or exported file: {path}")
    if Path(path).suffix == ".onnx":
        from .deploy.runtime import read_onnx_info

        state = read_onnx_info(path)  # task, config, meta: the checkpoint without weights
        if state.get("postprocess", "none") != "none":
            raise UserError(f"{path} was exported with --postprocess {state['postprocess']}; eval and predict need "
                            "the plain export (--postprocess none)")
        parity = state.get("parity") or {}  # an INT8 file has none: its accuracy was measured at export instead
        if parity and not parity.get("passed") and not allow_unverified:
            failed = [k for k, c in parity.get("checks", {}).items() if not c.get("ok")]
            raise UserError(f"{path} failed its parity check at export ({', '.join(failed)}): its outputs may "
                            "differ from the torch model's; --allow-unverified runs it anyway")
    else:
        state = load_checkpoint(path)
    cfg = checkpoint_config(state, path, list(overrides), config, task_class=get_task_class)
    if task is not None and cfg.task != task:
        raise UserError(f"--task {task} but {path} is a {cfg.task!r} model")
    return state, cfg


def resolve_engine(path: str | Path, engine: str | None) -> str:
    """The engine that runs ``path``: the given one, checked, or ``onnxruntime`` for ``.onnx`` / ``torch`` for ``.pt``."""
    engine = engine or ("onnxruntime" if Path(path).suffix == ".onnx" else "torch")
    if engine not in ("torch", "onnxruntime"):
        raise UserError(f"engine must be torch or onnxruntime, got {engine!r}")
    if Path(path).suffix == ".onnx" and engine != "onnxruntime":
        raise UserError(f"{path} is an exported ONNX file: it runs with --engine onnxruntime, not {engine}")
    return engine


def expand_inputs(inputs: Any) -> list[Any]:
    """The images of ``inputs``: a path or a folder (its image files, sorted, recursively), an in-memory image
    (PIL, numpy, tensor: see ``datasets.as_rgb``), or a list of these."""
    from .datasets import IMAGE_EXTENSIONS

    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    images: list[Any] = []
    for item in items:
        if not isinstance(item, (str, Path)):
            images.append(item)
            continue
        p = Path(item)
        if p.is_dir():
            images += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            images.append(str(p))
        else:
            raise UserError(f"input not found: {item}")
    if not images:
        raise UserError(f"no images in {', '.join(map(str, items)) or 'the empty input list'}")
    return images


class Predictor:
    """A model in eval mode with what its task needs to predict (class names, threshold, preprocessing).

    Call it (or :meth:`predict`) with a path, a folder, a PIL image, a numpy ``(H, W, 3)`` uint8 RGB array, a
    ``(3, H, W)`` float tensor in [0, 1], or a list of these; it returns one result per image
    (:class:`~resvision.tasks.result.Result`): a dict holding the record ``predictions.json`` holds (``to_dict()``),
    with the task's attributes, ``plot()`` (the picture ``predict`` writes, an RGB array) and ``save(dir)``:

    - classification ``label``, ``score``, ``top5``, ``probs`` (record: ``topk``);
    - detection ``boxes`` (x1, y1, x2, y2 in the image's own pixels), ``scores``, ``labels``, ``names``
      (record: ``detections``);
    - segmentation ``mask`` (class indices at the image's size), ``names`` (record: ``pixels``, class fractions);
    - face ``embedding``, ``similarity(other)`` (record: ``pair`` for two images, ``identity`` with ``gallery=``).
    """

    def __init__(self, task, model, data, source: Path, engine: str, device: Any = "cpu") -> None:
        import torch

        self.task, self.model, self.data, self.source, self.engine = task, model, data, source, engine
        self.device = torch.device(device)  # where the model is: the inputs go there

    @property
    def classes(self) -> list[str]:
        return list(self.data.classes)

    def predict(self, inputs: Any, **options: Any) -> list[dict[str, Any]]:
        """Predict every image of ``inputs``; ``options`` are the task's predict options (e.g. ``score_thresh``)."""
        accepted = {o.name for o in self.task.predict_options}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise UserError(f"unknown option {unknown[0]!r} for task {self.task.name} "
                            f"(options: {', '.join(sorted(accepted)) or 'none'})")
        return self.task.predict(self.model, expand_inputs(inputs), self.data, self.device,
                                 **self.task.options_of(options))

    __call__ = predict

    def write(self, results: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
        """The files ``predict`` writes into ``out_dir``: predictions.json, each result's files (its picture, ...) and
        the task's tables (CSV, COCO results). Returns their paths. A folder holding a training run or a report is
        refused (``engine.checkpoint.results_dir``)."""
        from .engine.checkpoint import holds_results

        out = Path(out_dir)
        if holds_results(out):
            raise UserError(f"output folder {out} already holds a run or a report; choose another folder")
        out.mkdir(parents=True, exist_ok=True)
        return self.task.write_predictions(results, out, self.data)

    def __repr__(self) -> str:
        return f"Predictor(task={self.task.name!r}, source={str(self.source)!r}, engine={self.engine!r})"


def load(path: str | Path, *, engine: str | None = None, device: str = "cpu", overrides: Sequence[str] = (),
         config: str | Path | None = None, allow_unverified: bool = False, compile: bool = False,
         export_dir: str | Path | None = None, task: str | None = None) -> Predictor:
    """A checkpoint (``.pt``, written by training) or an exported file (``.onnx``) as a ready :class:`Predictor`:
    the model rebuilt from the file's own config, weights loaded (EMA weights when the checkpoint has them), eval
    mode, no training data needed.

    Args:
        path: the ``.pt`` or ``.onnx`` file.
        engine: ``"torch"`` or ``"onnxruntime"``; default: ``onnxruntime`` for ``.onnx``, ``torch`` for ``.pt`` (a
            ``.pt`` with ``onnxruntime`` is exported first, with its parity check, into ``export_dir``).
        device: torch engine: ``"cpu"``, ``"cuda"``, ...; ``"auto"`` picks CUDA when present.
        overrides: ``key=value`` config overrides (e.g. ``model.inference.mode=slide``).
        config: a YAML config to use instead of the file's own.
        allow_unverified: run an ``.onnx`` file whose parity check failed at export.
        compile: torch engine: ``torch.compile`` the model.
        export_dir: where a ``.pt`` run with ``onnxruntime`` is exported (default: a new temporary folder).
        task: the task the file must belong to (checked before anything is built).
    """
    import torch

    from .tasks import build_task

    path = Path(path)
    engine = resolve_engine(path, engine)
    if compile and engine != "torch":
        raise UserError("--compile applies to --engine torch only")
    state, cfg = read_source(path, overrides, config, allow_unverified, task)
    if engine == "onnxruntime":
        built = build_task(cfg)
        data = built.data_from_meta(state.get("meta", {}))
        return Predictor(built, onnx_module(built, path, export_dir, overrides, config), data, path, engine)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    built, data, model = model_from_checkpoint(state, cfg, path)
    model = model.to(device, memory_format=torch.channels_last)  # faster CPU convolutions (docs/benchmarks.md)
    if compile:
        model = torch.compile(model)
    return Predictor(built, model, data, path, engine, device)


def onnx_module(task, path: str | Path, export_dir: str | Path | None = None, overrides: Sequence[str] = (),
                config: str | Path | None = None):
    """The module that runs ``path`` in ONNX Runtime the way the task calls its torch model: the ``.onnx`` file
    itself, or a ``.pt`` exported first (with its parity check) into ``export_dir`` (default: a temporary folder)."""
    from .deploy import OnnxRunner

    if Path(path).suffix != ".onnx":
        folder = Path(export_dir) if export_dir else Path(tempfile.mkdtemp(prefix="resvision-export-"))
        path = export(path, folder / "model.onnx", overrides=list(overrides), config=config)["path"]
    return task.onnx_model(OnnxRunner(path))


def model_from_checkpoint(state: dict[str, Any], cfg: Any, path: str | Path):
    """``(task, data, model)`` of a checkpoint's state and config (:func:`read_source`): the one way a checkpoint
    becomes a model (``rv.load``, ``rv.export``): the task built from the config, the data from the checkpoint's
    meta (class names, ...), the model with its weights (the EMA weights when the checkpoint has them), eval mode."""
    from .engine.checkpoint import load_model_state
    from .tasks import build_task

    task = build_task(cfg)
    data = task.data_from_meta(state.get("meta", {}))
    model = task.build_model(data)
    load_model_state(model, state.get("ema") or state["model"], path)
    return task, data, model.eval()


def load_for_export(checkpoint: str | Path, overrides: Sequence[str] = (), config: str | Path | None = None):
    """``(state, cfg, task, data, model)``: a checkpoint's eval-mode model rebuilt from its own config, what
    ``deploy.export.export_model`` is handed (``deploy/`` imports no task: the task is resolved here)."""
    if Path(checkpoint).suffix == ".onnx":
        raise UserError(f"{checkpoint} is already ONNX: export takes a .pt checkpoint")
    state, cfg = read_source(checkpoint, overrides, config)
    task, data, model = model_from_checkpoint(state, cfg, checkpoint)
    return state, cfg, task, data, model


def export(checkpoint: str | Path, output: str | Path | None = None, *, opset: int | None = None,
           dynamic_batch: bool = True, image_size: Sequence[int] | None = None, postprocess: str = "none",
           parity_images: int = 16, quantize: str | None = None, calibration_images: int = 64,
           overrides: Sequence[str] = (), config: str | Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """``rv.export``: export ``checkpoint`` to ONNX (``output``, default ``<run>/export/<checkpoint>.onnx``), check
    parity on ``parity_images`` validation images, and with ``quantize="int8"`` also write ``<file>.int8.onnx``.

    The checkpoint's model is rebuilt from its own config (or ``config``, with ``overrides``) by
    :func:`load_for_export`, then handed to ``deploy.export.export_model`` (``opset`` default
    ``deploy.DEFAULT_OPSET``). Returns the stored metadata (``path``, ``parity``, and ``int8`` when quantized).
    Raises UserError when a parity limit is missed (the files stay for inspection).
    """
    from .deploy.export import DEFAULT_OPSET, export_model

    state, _, task, _, model = load_for_export(checkpoint, overrides, config)
    return export_model(task, model, state, checkpoint, output, opset=DEFAULT_OPSET if opset is None else opset,
                        dynamic_batch=dynamic_batch, image_size=image_size, postprocess=postprocess,
                        parity_images=parity_images, quantize=quantize, calibration_images=calibration_images,
                        quiet=quiet)
