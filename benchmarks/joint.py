"""Joint-run benchmarks for ``tools/benchmark.py`` (``--only joint``): the shared pass of the packaged
``detection+segmentation`` model (``data.same_input``) against its two heads as single-task models.

The single-task models are copies of the joint model's heads, each with its own copy of the backbone: the detector
(torchvision's ``FasterRCNN`` forward) and the segmentation model run on the detector's input (the same resized,
normalised, padded image), its logits cropped and upsampled to the image as the shared pass does. So both sides
compute the same outputs from the same weights and the ratio is what sharing the backbone saves.

1. Inference, one image at a time (as evaluation and predict run), on the first validation images of the built-in
   shapes (their own sizes, resized to the detector's ``min_size``): torch eager, then ONNX Runtime on the files
   ``torch.onnx`` writes of each (the joint file is what ``resvision export`` writes for this run).
2. One training step (forward, backward, AdamW step) on the same batch of 8: joint ÷ (detection + segmentation).

With ``--device cuda`` the models and images are on the GPU and every window waits for the GPU's work to end
(ONNX Runtime rows are left out: the package measured is onnxruntime's CPU build).
"""

from __future__ import annotations

import copy
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from resvision.benchmarks.measure import alternate, compare
from resvision.engine.trainer import to_device

CONFIG = "detection+segmentation"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class SegmentationAlone(nn.Module):
    """The segmentation head as a single-task model at the detector's input size: resize and normalise (the detector's
    transform), its own backbone, logits cropped and upsampled to the image."""

    def __init__(self, transform: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.transform, self.model = transform, model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        inputs, _ = self.transform([image])
        h, w = inputs.image_sizes[0]
        logits = self.model(inputs.tensors)[..., :h, :w]
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)


# a backbone that costs more than the heads: ResNet-50 (c2-c5) with the same heads, images resized to 512 px
RESNET50 = ["model.backbone.name=resnet50", "tasks.detection.model.min_size=512", "tasks.detection.model.max_size=683"]


def _build(overrides: tuple[str, ...] = ()):
    """The packaged joint config's task, model (fresh weights) and data."""
    from resvision.tasks import build_task, load_config

    task = build_task(load_config(CONFIG, ["train.progress=false", *overrides]))
    data = task.build_datasets(training=True)
    torch.manual_seed(0)
    return task, task.build_model(data), data


def _onnx(module: nn.Module, image: torch.Tensor, path: Path, outputs: list[str]):
    from resvision.deploy.runtime import OnnxRunner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (image,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                          output_names=outputs, dynamic_axes={"images": {1: "height", 2: "width"}})
    return OnnxRunner(path)


def _synchronize() -> None:
    """Wait for the GPU's queued work, so that a window's clock covers it (no-op on CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _infer_window(run, images):
    def window() -> int:
        with torch.inference_mode():
            for image in images:
                run(image)
        _synchronize()
        return len(images)
    return window


def _train_window(step, batches):
    def window() -> int:
        for batch in batches:
            step(batch)
        _synchronize()
        return sum(len(b.images) for b in batches)
    return window


def _stepper(params, loss_of):
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step(batch) -> None:
        loss = sum(loss_of(batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _single_models(model):
    """Copies of the joint model's heads as single-task models, each holding its own backbone."""
    detector = copy.deepcopy(model.heads["detection"]).eval()
    segmenter = SegmentationAlone(detector.transform, copy.deepcopy(model.heads["segmentation"])).eval()
    assert detector.backbone.body is not model.backbone and segmenter.model.backbone is not model.backbone
    return detector, segmenter


def _inference(model, images, windows: int):
    """Eager and ONNX Runtime rates (eager only on a GPU: ``None`` for ONNX Runtime) of the joint model's one pass
    and of the two single-task models in turn."""
    from resvision.tasks.detection.onnx import OneImageDetector
    from resvision.tasks.joint.shared import SharedExportModule

    model.eval()
    detector, segmenter = _single_models(model)
    _log(f"[joint] eager inference, {len(images)} images")
    eager = alternate({"joint": _infer_window(model.shared_outputs, images),
                       "two models": _infer_window(lambda x: (detector([x]), segmenter(x)), images)}, windows, log=_log)
    if images[0].is_cuda:
        return eager, None

    with tempfile.TemporaryDirectory() as tmp:
        _log("[joint] exporting the three graphs")
        joint = _onnx(SharedExportModule(model), images[0], Path(tmp) / "joint.onnx",
                      ["boxes", "labels", "scores", "logits"])
        det = _onnx(OneImageDetector(detector), images[0], Path(tmp) / "det.onnx", ["boxes", "labels", "scores"])
        seg = _onnx(segmenter, images[0], Path(tmp) / "seg.onnx", ["logits"])
        _log(f"[joint] ONNX Runtime inference, {len(images)} images")
        ort = alternate({"joint": _infer_window(joint.run, images),
                         "two models": _infer_window(lambda x: (det.run(x), seg.run(x)), images)}, windows, log=_log)
    return eager, ort


def bench_joint(s) -> list[str]:
    """``s``: the tool's Settings (``pick``, ``command``)."""
    device = torch.device(s.device)
    task, model, data = _build()
    model.to(device)
    images = [data.val[k]["detection"][0].to(device) for k in range(s.pick(16, 4))]
    # a GPU runs a window of 16 small images in a fifth of a second, too short to time against launch jitter
    laps = 10 if device.type == "cuda" else 1
    sizes = sorted({tuple(i.shape[-2:]) for i in images})
    windows = s.pick(7, 1)
    rates = {"demo model (half-width ResNet-18, 160 px)": _inference(model, images * laps, windows)}
    _, big, _ = _build(tuple(RESNET50))
    big.to(device)
    rates["ResNet-50, 512 px"] = _inference(big, images[:s.pick(6, 2)] * laps, s.pick(5, 1))
    del big
    detector, segmenter = _single_models(model)

    loader = torch.utils.data.DataLoader(data.train, batch_size=8, shuffle=False, collate_fn=task.collate_fn())
    batches = [to_device(batch, device) for batch, _ in zip(loader, range(s.pick(2, 1)))] * laps
    model.train(), detector.train(), segmenter.train()
    seg_task = task.heads["segmentation"]

    def segmentation_losses(batch):
        targets = [{"boxes": t["boxes"], "labels": t["labels"], "masks": m[None]} for t, m in zip(batch.targets, batch.masks)]
        inputs, targets = detector.transform(batch.images, targets)
        masks = torch.full((len(targets), *inputs.tensors.shape[-2:]), 255, dtype=torch.long, device=device)
        for k, t in enumerate(targets):
            masks[k, :t["masks"].shape[1], :t["masks"].shape[2]] = t["masks"][0]
        return seg_task.losses(*segmenter.model(inputs.tensors, aux=True), masks)

    steps = {"joint": _stepper(model.parameters(), model),
             "detection": _stepper(detector.parameters(), lambda b: detector(
                 b.images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in b.targets])),
             "segmentation": _stepper(segmenter.parameters(), segmentation_losses)}
    _log(f"[joint] training steps, {len(batches)} batches of 8")
    train = alternate({name: _train_window(step, batches) for name, step in steps.items()}, s.pick(5, 1), log=_log)

    on_gpu = f" (on the GPU: {torch.cuda.get_device_name()})" if device.type == "cuda" else ""
    lines = [f"## Joint run{on_gpu}: one backbone pass for detection + segmentation vs the two single-task models", "",
             f"The packaged `{CONFIG}` model (`configs/{CONFIG}/fasterrcnn_fpn_smallresnet_shapes.yaml`: half-width "
             "ResNet-18 with c2–c5, Faster R-CNN with its FPN on c3–c5 at min_size 160, FPN segmentation decoder on "
             "c2–c5; fresh weights) against "
             "copies of its two heads, each with its own backbone: the detector, and the segmentation model on the "
             "detector's input (the same resized image), its logits upsampled to the image as the shared pass does. "
             f"{len(images)} built-in shapes validation images (sizes {sizes[0][1]}x{sizes[0][0]} … "
             f"{sizes[-1][1]}x{sizes[-1][0]}), one at a time{f', {laps} laps per window' if laps > 1 else ''}. The same heads on a ResNet-50 backbone with the images "
             f"resized to 512 px (`{' '.join(RESNET50)}`; the first {s.pick(6, 2)} images) show the other end: what "
             "one pass saves is the backbone's share of the two models' time, small for the demo's backbone (cheaper "
             "than the detector's RPN and RoI heads), large for a ResNet-50.", "",
             "| model | engine | joint img/s | two models img/s | joint time ÷ two models' | round ratios min–max | "
             "windows | target |", "|---|---|---:|---:|---:|---|---:|---|"]
    for label, per_engine in rates.items():
        for engine, measured in zip(("torch eager", "ONNX Runtime"), per_engine):
            if measured is None:
                continue
            c = compare(measured, "two models", "joint")  # time ratio = rate of the two / rate of the joint
            verdict = "noisy (rounds disagree by > ±10 %)" if c.noisy else "met" if c.ratio <= 0.65 else "**not met**"
            lines.append(f"| {label} | {engine} | {c.b:.2f} | {c.a:.2f} | **{c.ratio:.3f}** | {c.low:.3f}–{c.high:.3f} "
                         f"| {c.windows} | ≤ 0.65: {verdict} |")
    det_rate, seg_rate = (compare(train, n, "joint").a for n in ("detection", "segmentation"))
    joint_rate = compare(train, "joint", "joint").a
    ratio = (1 / joint_rate) / (1 / det_rate + 1 / seg_rate)
    lines += ["", f"**Training step** (forward, backward, AdamW step; {len(batches)} batches of 8 training images per "
              "window, the same batches for all three): the joint step on one pass against the detection step and the "
              "segmentation step (on the detector's resized input) of the single-task copies.", "",
              "| step | img/s (median) | windows |", "|---|---:|---:|",
              f"| joint (one backbone pass, both losses) | {joint_rate:.2f} | {len(train['joint'])} |",
              f"| detection alone | {det_rate:.2f} | {len(train['detection'])} |",
              f"| segmentation alone | {seg_rate:.2f} | {len(train['segmentation'])} |", "",
              f"Joint step time ÷ (detection step + segmentation step): **{ratio:.3f}**.", "",
              f"Command: `{s.command} --only joint`"]
    return lines
