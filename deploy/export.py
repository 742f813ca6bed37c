"""Export a checkpoint of any task to ONNX, check the file, and measure it against the torch model.

``export_model()`` is what ``tools/export.py`` and ``rv.export`` run once the caller (``predictor.export``) has
resolved the task and rebuilt the checkpoint's model from its own config (this package imports no task):

1. the task, the checkpoint's eval-mode model and its state, handed over;
2. ``task.export_module(model, postprocess)`` traced on real validation images with torch's TorchScript-based
   ONNX exporter, then ``onnx.checker``. Not the newer ``dynamo=True`` exporter, although torch deprecates this
   one: it cannot export the detector (torch.export stops at data-dependent branches, ours in the resize and
   torchvision's in batched NMS), it takes many times longer on the other tasks, it writes opset 18 where
   conversion to the requested opset fails, its node names lose the module path that INT8 scopes select by, and it
   needs onnxscript. ``tools/experiments/onnx_exporters.py`` measures both (docs/benchmarks.md, "ONNX exporters");
3. parity: the same validation images through the torch module and through ONNX Runtime, compared by the
   task's ``parity`` against ``onnx_parity_limits``; the figures are printed, stored in the file's metadata and
   in ``<file>.json`` beside it. A file that misses a limit is still written (with ``"passed": false``) so the
   numbers can be inspected, and ``export`` raises afterwards.
4. optionally INT8 (``deploy.quantize``): static QDQ quantization calibrated on training images, with the
   validation metric of fp32 and INT8 and their speed measured in the same run.

The file carries everything ``eval`` / ``predict`` need (task, config, class names, preprocessing), as JSON in
the ONNX metadata: no pickle anywhere on this path.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..errors import UserError
from .runtime import OnnxRunner, import_onnx, write_metadata

__all__ = ["DEFAULT_OPSET", "export_model", "export_to_onnx", "parity_report", "validation_batches"]


DEFAULT_OPSET = 17  # torchvision's detection models are tested with the TorchScript exporter at 17


def validation_batches(task, count: int, split: str = "val", meta: dict[str, Any] | None = None) -> list[Any]:
    """Batches holding the first ``count`` images of the config's validation split (training split for INT8
    calibration), read through the task's own adapters and transforms."""
    data = task.build_datasets(training=split == "train")
    data.fill_from_meta(meta or {})  # what evaluation-only data leaves empty comes from the checkpoint
    dataset = data.train if split == "train" else data.val
    if dataset is None or len(dataset) == 0:
        raise UserError(f"no {split} images to check the export on: point data.* at them (e.g. data.root=...)")
    subset = torch.utils.data.Subset(dataset, range(min(count, len(dataset))))
    loader = DataLoader(subset, batch_size=min(8, count), shuffle=False, num_workers=0, collate_fn=task.collate_fn())
    return list(loader)


def _resized(args: tuple[torch.Tensor, ...], image_size: tuple[int, int] | None) -> tuple[torch.Tensor, ...]:
    """``args`` with every image (``(3, H, W)`` or ``(N, 3, H, W)``) resized to ``image_size`` (bilinear)."""
    if image_size is None:
        return args
    batched = [a if a.ndim == 4 else a[None] for a in args]
    resized = [F.interpolate(a, size=image_size, mode="bilinear", align_corners=False) for a in batched]
    return tuple(r if a.ndim == 4 else r[0] for r, a in zip(resized, args))


def export_to_onnx(module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: str | Path, task,
                   postprocess: str = "none", opset: int = DEFAULT_OPSET, dynamic_batch: bool = True) -> list[str]:
    """Trace ``module`` on ``example`` into ``path`` and check it with ``onnx.checker``; the output names."""
    onnx = import_onnx()
    inputs = task.onnx_inputs(dynamic_batch)
    outputs = task.onnx_outputs(postprocess, dynamic_batch)
    dynamic = {**inputs, **outputs}
    with warnings.catch_warnings():
        # the TorchScript exporter's deprecation notice and tracer warnings about Python control flow in
        # torchvision's detection code (the parity check below is what tells whether the trace is right)
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, example, str(path), dynamo=False, opset_version=opset, input_names=list(inputs),
                              output_names=list(outputs), dynamic_axes=dynamic, do_constant_folding=True)
        except torch.onnx.errors.OnnxExporterError as err:  # an operator this opset cannot express
            reason = str(err).strip().splitlines()[0].split("  [Caused by")[0] if str(err).strip() else type(err).__name__
            raise UserError(f"ONNX export at --opset {opset} failed: {reason} (try a newer opset, e.g. "
                            f"--opset {DEFAULT_OPSET})") from None
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:  # noqa: BLE001
        raise UserError(f"exported {path} fails onnx.checker: {str(err).strip().splitlines()[0]}") from None
    return list(outputs)


def _named(value: Any, names: Sequence[str]) -> dict[str, torch.Tensor]:
    values = value if isinstance(value, (tuple, list)) else (value,)
    return {name: v.detach() for name, v in zip(names, values)}


@torch.inference_mode()
def parity_report(task, module: torch.nn.Module, runner: OnnxRunner, examples: list[tuple[torch.Tensor, ...]],
                  names: Sequence[str]) -> dict[str, Any]:
    """The task's parity figures over every example (worst case per figure) and whether each meets its limit."""
    worst: dict[str, float] = {}
    for args in examples:
        reference = _named(module(*args), names)
        exported = {k: torch.from_numpy(v) for k, v in runner.run(*args).items()}
        for key, value in task.parity(reference, exported).items():
            op = task.onnx_parity_limits.get(key, ("<=", None))[0]
            if key not in worst:
                worst[key] = value
            else:
                worst[key] = max(worst[key], value) if op == "<=" else min(worst[key], value)
    checks = {}
    for key, (op, limit) in task.onnx_parity_limits.items():
        value = worst.get(key, float("nan"))
        checks[key] = {"value": value, "limit": f"{op} {limit:g}",
                       "ok": bool(value <= limit if op == "<=" else value >= limit)}
    extra = {k: v for k, v in worst.items() if k not in checks}
    images = sum(task.example_images(args) for args in examples)
    return {"checks": checks, "other": extra, "images": images, "passed": all(c["ok"] for c in checks.values())}


def _print_parity(path: Path, parity: dict[str, Any]) -> None:
    lines = [f"parity of {path.name} vs the torch model on {parity['images']} validation image(s):"]
    for key, c in parity["checks"].items():
        lines.append(f"  {key} = {c['value']:.3g} (limit {c['limit']}) {'ok' if c['ok'] else 'FAILED'}")
    for key, value in parity["other"].items():
        lines.append(f"  {key} = {value:.3g}")
    print("\n".join(lines))


def export_model(task, model: torch.nn.Module, state: dict[str, Any], checkpoint: str | Path,
                 output: str | Path | None = None, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                 image_size: Sequence[int] | None = None, postprocess: str = "none", parity_images: int = 16,
                 quantize: str | None = None, calibration_images: int = 64, quiet: bool = False) -> dict[str, Any]:
    """Export ``model`` (``task``'s eval-mode model, with ``state``: the checkpoint it was loaded from, whose meta
    the file keeps) to ONNX (``output``, default ``<run>/export/<checkpoint>.onnx``), check parity on
    ``parity_images`` validation images, and with ``quantize="int8"`` also write ``<file>.int8.onnx``.
    ``rv.export(checkpoint)`` (``predictor.export``) rebuilds the three from a checkpoint and calls this.

    Returns the stored metadata (``path``, ``parity``, and ``int8`` when quantized). Raises UserError when a
    parity limit is missed (the files stay for inspection).
    """
    if postprocess is None:
        postprocess = "none"
    if quantize not in (None, "int8"):
        raise UserError(f"--quantize must be int8, got {quantize!r}")
    if parity_images < 1:
        raise UserError(f"--parity-images must be at least 1, got {parity_images}")
    if quantize and len(task.onnx_inputs(dynamic_batch)) > 1:
        raise UserError(f"--quantize int8 is not available for a graph of several inputs (task {task.name})")
    if quantize and not task.onnx_int8:
        raise UserError(f"--quantize int8 is not built for task {task.name}: export it in float32, or extract a head "
                        "(resvision extract) and quantize that")
    if quantize and calibration_images < 1:
        raise UserError(f"--calibration-images must be at least 1, got {calibration_images}")
    cfg = task.cfg
    if not task.onnx_postprocess:  # a task that declares no export (joint runs, for now)
        raise UserError(task.unsupported("ONNX export"))
    if postprocess not in task.onnx_postprocess:
        raise UserError(f"--postprocess {postprocess} does not apply to task {task.name} "
                        f"(choices: {', '.join(task.onnx_postprocess)})")
    size = tuple(int(v) for v in image_size) if image_size else None
    if size is not None and (len(size) != 2 or min(size) < 8):
        raise UserError(f"--image-size takes two sizes of at least 8 (H W), got {list(image_size)}")
    if size is not None:
        task.set_export_size(size)  # before the examples: they come through the (maybe resized) preprocessing
    path = Path(output) if output else _default_path(checkpoint)
    if path.suffix != ".onnx":
        raise UserError(f"--output must end in .onnx, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)

    examples = [_resized(args, size) for batch in validation_batches(task, parity_images, meta=state.get("meta"))
                for args in task.export_examples(batch, model)]
    module = task.export_module(model, postprocess).eval()
    started = time.perf_counter()
    tmp = path.with_name(f".{path.name}.partial")
    names = export_to_onnx(module, examples[0], tmp, task, postprocess, opset, dynamic_batch)
    runner = OnnxRunner(tmp)
    parity = parity_report(task, module, runner, examples if dynamic_batch or not task.onnx_batched else
                           [a for a in examples if a[0].shape == examples[0][0].shape], names)
    os.replace(tmp, path)
    info = {
        "format": "resvision-onnx/1", "task": cfg.task, "backbone": cfg.model.backbone.name,
        "config": cfg.to_dict(), "meta": state.get("meta", {}), "source": str(Path(checkpoint).name),
        "postprocess": postprocess, "inputs": _input_layouts(task, examples[0], dynamic_batch),
        "outputs": names, "preprocessing": task.preprocessing(model), "opset": opset,
        "exporter": f"torch.onnx TorchScript exporter, torch {torch.__version__}", "parity": parity,
        "export_seconds": round(time.perf_counter() - started, 2),
    }
    write_metadata(path, info)
    if not quiet:
        _print_parity(path, parity)
    info["path"] = str(path)
    if not parity["passed"]:  # stop here: a file that misses its limits is not worth quantizing
        failed = ", ".join(f"{k}={c['value']:.3g} (limit {c['limit']})" for k, c in parity["checks"].items()
                           if not c["ok"])
        raise UserError(f"{path} does not match the torch model: {failed}")
    if quantize == "int8":
        from .quantize import quantize_int8

        calibration = validation_batches(task, calibration_images, split="train", meta=state.get("meta"))
        info["int8"] = quantize_int8(path, task, cfg, state, model, examples, calibration, quiet=quiet)
    return info


def _input_layouts(task, example: tuple[torch.Tensor, ...], dynamic_batch: bool) -> dict[str, Any]:
    """Each input's shape (free axes by name) and dtype, for the file's metadata."""
    layouts = {}
    for (name, axes), tensor in zip(task.onnx_inputs(dynamic_batch).items(), example):
        shape: list[Any] = list(tensor.shape)
        for axis, axis_name in axes.items():
            shape[axis] = axis_name
        layouts[name] = {"shape": shape, "dtype": "float32"}
    return layouts


def _default_path(checkpoint: str | Path) -> Path:
    folder = Path(checkpoint).resolve().parent
    run = folder.parent if folder.name == "checkpoints" else folder
    return run / "export" / (Path(checkpoint).stem + ".onnx")
