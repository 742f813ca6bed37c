"""Segmentation benchmarks for ``tools/benchmark.py`` (``--only segmentation``).

1. Training: our U-Net-ResNet-34 (registry backbone + smp's decoder and head) against
   ``smp.Unet("resnet34", encoder_weights=None)`` holding the same weights, in the same bare loop on the
   same batches. The two compute the same logits (a test checks ``torch.equal``), so the ratio measures
   our glue: the feature-dict adapter, padding to the deepest stride and cropping back.
2. Sliding-window inference at 512x512 with 256-px windows (no overlap, and a 1/3 overlap as MMSegmentation configs use)
   against whole-image inference of the same model on the same images: the price of tiling.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from resvision.benchmarks.measure import alternate, compare


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _unets(classes: int):
    """(ours, smp's) U-Net-ResNet-34 with identical weights."""
    import segmentation_models_pytorch as smp

    from resvision.backbone import build_backbone
    from resvision.tasks.segmentation.model import SegmentationModel

    torch.manual_seed(0)
    reference = smp.Unet("resnet34", encoder_weights=None, classes=classes)
    ours = SegmentationModel(build_backbone("resnet34", out_features=["c1", "c2", "c3", "c4", "c5"]), classes,
                             decoder="unet")
    ours.load_state_dict({k.replace("encoder.", "backbone.", 1).replace("segmentation_head.", "head.", 1): v
                          for k, v in reference.state_dict().items() if not k.startswith("encoder.fc.")})
    return ours, reference


def _train_window(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def window() -> int:
        model.train()
        for images, masks in batches:
            loss = F.cross_entropy(model(images), masks, ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return sum(len(images) for images, _ in batches)
    return window


def _infer_window(run, images):
    def window() -> int:
        with torch.inference_mode():
            run(images)
        return len(images)
    return window


def bench_segmentation(s) -> list[str]:
    """``s``: the tool's Settings (``pick``, ``windows``, ``command``)."""
    from resvision.tasks.segmentation.model import infer_logits

    classes, size, batch = 21, s.pick(256, 128), 4
    ours, ref = _unets(classes)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch, 3, size, size, generator=g), torch.randint(0, classes, (batch, size, size), generator=g))
               for _ in range(s.pick(2, 1))]
    _log(f"[segmentation] training U-Net-R34 {size}x{size} batch {batch}")
    train = compare(alternate({"resvision": _train_window(ours, batches), "smp": _train_window(ref, batches)},
                              s.pick(5, 1), log=_log), "resvision", "smp")

    ours.eval()
    images = torch.randn(2, 3, 512, 512, generator=g)
    variants = {"whole image": lambda x: infer_logits(ours, x, mode="whole"),
                "slide 256 / stride 256 (4 tiles)": lambda x: infer_logits(ours, x, mode="slide", window=256, stride=256),
                "slide 256 / stride 171 (9 tiles)": lambda x: infer_logits(ours, x, mode="slide", window=256, stride=171)}
    _log("[segmentation] inference 512x512, whole vs sliding windows")
    rates = alternate({name: _infer_window(run, images) for name, run in variants.items()}, s.pick(5, 1), log=_log)

    lines = ["## Segmentation: our U-Net vs smp's, and sliding-window inference", "",
             f"**Training.** `SegmentationModel(build_backbone(\"resnet34\"), {classes}, decoder=\"unet\")` against "
             f"`smp.Unet(\"resnet34\", encoder_weights=None, classes={classes})` after loading smp's state dict into ours "
             "(strict; the logits are bit-identical, `tests/test_segmentation_task.py`), so the ratio is the cost of our "
             f"glue. Same bare loop: `F.cross_entropy(model(x), y, ignore_index=255)`, SGD momentum 0.9, fp32, "
             f"{len(batches)} random batches of {batch} at {size}x{size} per window.", "",
             "| what | resvision img/s | smp img/s | ratio | round ratios min–max | windows | target |",
             "|---|---:|---:|---:|---|---:|---|",
             f"| training U-Net-R34, {size}x{size}, batch {batch} | {train.a:.2f} | {train.b:.2f} | **{train.ratio:.3f}** | "
             f"{train.low:.3f}–{train.high:.3f} | {train.windows} | ≥ 0.97: {'met' if train.ratio >= 0.97 else '**not met**'} |",
             "", "**Sliding-window inference** (`infer_logits`, the path `model.inference.mode: slide` takes) of the same "
             "U-Net on 2 random 512x512 images per window, against whole-image inference of the same images. 4 "
             "non-overlapping 256-px tiles cover the same pixels as the whole image, so their ratio is the cost of tiling "
             "itself (smaller convolutions, border padding of each tile, the logit accumulation); 9 tiles at stride 171 "
             "compute 2.25x the pixels, so ≈ 0.44 is the ideal there.", "",
             "| inference, 512x512, batch 2 | img/s (median) | ÷ whole image | windows |", "|---|---:|---:|---:|"]
    whole = compare(rates, "whole image", "whole image").a
    for name in variants:
        c = compare(rates, name, "whole image")
        lines.append(f"| {name} | {c.a:.2f} | {c.a / whole:.3f} | {c.windows} |")
    return lines + ["", f"Command: `{s.command} --only segmentation`"]
