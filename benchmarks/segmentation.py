"""Segmentation benchmarks for ``tools/benchmark.py`` (``--only segmentation``).

1. Training: our U-Net-ResNet-34 and DeepLabV3+-ResNet-50 (registry backbone, dilated to output stride 16 for
   DeepLab, + smp's decoder and head) against ``smp.Unet("resnet34")`` / ``smp.DeepLabV3Plus("resnet50")``
   holding the same weights, in the same bare loop on the same batches. Each pair computes the same logits
   (tests), so the ratio measures our glue: the feature-dict adapter, padding to the deepest stride and
   cropping back.
2. Whole-image inference of the three decoders (FPN, U-Net, DeepLabV3+) on the same ResNet-50.
3. Sliding-window inference at 512x512 with 256-px windows (no overlap, and a 1/3 overlap as MMSegmentation configs use)
   against whole-image inference of the same model on the same images: the price of tiling.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from resvision.benchmarks.measure import alternate, compare


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


SMP_MODELS = {"unet": "Unet", "fpn": "FPN", "deeplabv3plus": "DeepLabV3Plus"}


def _pair(decoder: str, encoder: str, classes: int, output_stride: int | None = None):
    """(ours, smp's) ``decoder`` on ``encoder`` with identical weights."""
    import segmentation_models_pytorch as smp

    from resvision.backbone import build_backbone
    from resvision.tasks.segmentation.model import SegmentationModel

    torch.manual_seed(0)
    dilated = {"encoder_output_stride": output_stride} if output_stride else {}
    reference = getattr(smp, SMP_MODELS[decoder])(encoder, encoder_weights=None, classes=classes, **dilated)
    ours = SegmentationModel(build_backbone(encoder, out_features=["c1", "c2", "c3", "c4", "c5"],
                                            output_stride=output_stride), classes, decoder=decoder)
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
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch, 3, size, size, generator=g), torch.randint(0, classes, (batch, size, size), generator=g))
               for _ in range(s.pick(2, 1))]
    pairs = {"U-Net-R34": _pair("unet", "resnet34", classes),
             "DeepLabV3+-R50 (output stride 16)": _pair("deeplabv3plus", "resnet50", classes, 16)}
    trained = {}
    for label, (mine, ref) in pairs.items():
        _log(f"[segmentation] training {label} {size}x{size} batch {batch}")
        trained[label] = compare(alternate({"resvision": _train_window(mine, batches), "smp": _train_window(ref, batches)},
                                           s.pick(5, 1), log=_log), "resvision", "smp")
    ours = pairs["U-Net-R34"][0]  # the sliding-window model below

    side = s.pick(512, 256)
    decoders = {label: _pair(decoder, "resnet50", classes, stride)[0].eval()
                for label, decoder, stride in (("FPN", "fpn", None), ("U-Net", "unet", None),
                                               ("DeepLabV3+ (output stride 16)", "deeplabv3plus", 16))}
    one = torch.randn(1, 3, side, side, generator=g)
    _log(f"[segmentation] whole-image inference of three decoders on ResNet-50, {side}x{side}")
    decoder_rates = alternate({label: _infer_window(model, one) for label, model in decoders.items()}, s.pick(5, 1),
                              log=_log)

    ours.eval()
    images = torch.randn(2, 3, 512, 512, generator=g)
    variants = {"whole image": lambda x: infer_logits(ours, x, mode="whole"),
                "slide 256 / stride 256 (4 tiles)": lambda x: infer_logits(ours, x, mode="slide", window=256, stride=256),
                "slide 256 / stride 171 (9 tiles)": lambda x: infer_logits(ours, x, mode="slide", window=256, stride=171)}
    _log("[segmentation] inference 512x512, whole vs sliding windows")
    rates = alternate({name: _infer_window(run, images) for name, run in variants.items()}, s.pick(5, 1), log=_log)

    lines = ["## Segmentation: our U-Net and DeepLabV3+ vs smp's, three decoders, sliding-window inference", "",
             f"**Training.** `SegmentationModel(build_backbone(\"resnet34\"), {classes}, decoder=\"unet\")` against "
             f"`smp.Unet(\"resnet34\", encoder_weights=None, classes={classes})` after loading smp's state dict into ours "
             "(strict; the logits are bit-identical, `tests/test_segmentation_task.py`), so the ratio is the cost of our "
             f"glue. Same bare loop: `F.cross_entropy(model(x), y, ignore_index=255)`, SGD momentum 0.9, fp32, "
             f"{len(batches)} random batches of {batch} at {size}x{size} per window.", "",
             "DeepLabV3+ likewise against `smp.DeepLabV3Plus(\"resnet50\", encoder_weights=None, "
             "encoder_output_stride=16)`, our ResNet-50 built with `output_stride=16`.", "",
             "| what | resvision img/s | smp img/s | ratio | round ratios min–max | windows | target |",
             "|---|---:|---:|---:|---|---:|---|",
             *(f"| training {label}, {size}x{size}, batch {batch} | {t.a:.2f} | {t.b:.2f} | **{t.ratio:.3f}** | "
               f"{t.low:.3f}–{t.high:.3f} | {t.windows} | ≥ 0.97: "
               f"{'noisy (rounds disagree by > ±10 %)' if t.noisy else 'met' if t.ratio >= 0.97 else '**not met**'} |"
               for label, t in trained.items()),
             "", f"**Decoders** (`SegmentationModel` on a ResNet-50, {classes} classes, eval mode, whole-image inference "
             f"of one {side}x{side} image per window):", "",
             "| decoder | img/s (median) | ÷ FPN | windows |", "|---|---:|---:|---:|",
             *(f"| {label} | {compare(decoder_rates, label, 'FPN').a:.2f} | {compare(decoder_rates, label, 'FPN').ratio:.3f} "
               f"| {compare(decoder_rates, label, 'FPN').windows} |" for label in decoders),
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
