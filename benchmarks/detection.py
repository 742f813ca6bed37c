"""Detection benchmarks for ``tools/benchmark.py`` (``--only detection``).

1. Training: our Faster R-CNN R50-FPN (registry backbone + torchvision parts) against torchvision's
   own ``fasterrcnn_resnet50_fpn`` built with identical settings, same bare loop, alternating windows.
2. Inference images/s of the same pair at the demo size and at 800x1333.
3. Evaluation: our evaluator (COCO via pycocotools + VOC07/VOC12) against pycocotools' COCOeval
   alone, on the same detections of the built-in shapes validation set.
4. RoIAlign backward: the detection demo's training step with our RoI pooler's backward on every thread against
   torchvision's one-thread kernel (``ExportableRoIAlign.threaded``), alternating windows.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import sys

import torch

from resvision.benchmarks.measure import alternate, compare


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _detectors(min_size: int, max_size: int):
    """(ours, torchvision's) with the same weights, frozen BN, stem + stage 1 frozen (torchvision's
    ``trainable_backbone_layers=3``), the same sizes and sampling."""
    import torchvision
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    from resvision.backbone import build_backbone
    from resvision.tasks.detection import DetectorSettings, build_faster_rcnn

    torch.manual_seed(0)
    body = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    reference = torchvision.models.detection.FasterRCNN(_resnet_fpn_extractor(body, 3), num_classes=91,
                                                        min_size=min_size, max_size=max_size)
    ours = build_faster_rcnn(build_backbone("resnet50", norm="frozen_bn", frozen_stages=1), 91,
                             DetectorSettings(min_size=min_size, max_size=max_size))
    ours.load_state_dict(reference.state_dict())
    return ours, reference


def _batches(count: int, batch: int, height: int, width: int):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        images = [torch.rand(3, height, width, generator=g) for _ in range(batch)]
        targets = []
        for _ in range(batch):
            xy = torch.rand(4, 2, generator=g) * torch.tensor([width * 0.6, height * 0.6])
            wh = 20 + torch.rand(4, 2, generator=g) * 60
            targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(1, 91, (4,), generator=g)})
        out.append((images, targets))
    return out


def _train_window(model, batches):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def window() -> int:
        model.train()
        for images, targets in batches:
            losses = model(images, targets)
            opt.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            opt.step()
        return sum(len(images) for images, _ in batches)
    return window


def _infer_window(model, images):
    def window() -> int:
        model.eval()
        with torch.inference_mode():
            model(images)
        return len(images)
    return window


def bench_detection(s) -> list[str]:
    """``s``: the tool's Settings (``pick``, ``windows``, ``command``)."""
    lines = ["## Detection: our Faster R-CNN vs torchvision's, and evaluation cost", ""]
    # Training at a CPU-sized input: one R50-FPN step at 256x341, batch 2, takes ~10 s on 2 cores.
    windows = s.pick(3, 1)
    ours, ref = _detectors(256, 352)
    batches = _batches(1, 2, 256, 341)
    _log("[detection] training R50-FPN 256x341 batch 2")
    train = compare(alternate({"resvision": _train_window(ours, batches), "torchvision": _train_window(ref, batches)},
                              windows, log=_log), "resvision", "torchvision")
    rows = [("training, 256x341, batch 2 (R50-FPN, SGD)", train)]
    for size, (h, w) in (("demo size 160", (150, 160)), ("800x1333", (800, 1333))):
        ours, ref = _detectors(*((160, 256) if size.startswith("demo") else (800, 1333)))
        images = [torch.rand(3, h, w) for _ in range(2)]
        _log(f"[detection] inference {size}")
        rates = alternate({"resvision": _infer_window(ours, images), "torchvision": _infer_window(ref, images)},
                          windows, log=_log)
        rows.append((f"inference, {size} ({h}x{w} input), batch 2", compare(rates, "resvision", "torchvision")))
    lines += ["| what | resvision img/s | torchvision img/s | ratio | round ratios min–max | windows |",
              "|---|---:|---:|---:|---|---:|"]
    for label, c in rows:
        lines.append(f"| {label} | {c.a:.2f} | {c.b:.2f} | **{c.ratio:.3f}** | {c.low:.3f}–{c.high:.3f} | {c.windows} |")
    lines += ["", "Target for training: ratio ≥ 0.97 (we assemble torchvision's own parts, so any gap is our overhead). "
              "Both models hold identical weights (ours loads torchvision's state dict strictly), FrozenBatchNorm, "
              "stem + stage 1 frozen, random images with 4 random boxes each, plain SGD in the same loop.", ""]
    lines += _bench_evaluation(s)
    lines += _bench_cpu_threads(s)
    lines += ["", f"Command: `{s.command} --only detection`"]
    return lines


def _bench_cpu_threads(s) -> list[str]:
    """The packaged detection demo's training step (fresh weights, the built-in shapes' first training batches of 8)
    with the RoI pooler's kernels and the RPN's proposal filtering on every torch thread, against torchvision's
    one-thread code."""
    from resvision.tasks import build_task, load_config
    from resvision.tasks.detection import model as detection_model

    task = build_task(load_config("detection", ["train.progress=false"]))
    data = task.build_datasets(training=True)
    torch.manual_seed(0)
    model = task.build_model(data).train()
    loader = torch.utils.data.DataLoader(data.train, batch_size=8, shuffle=False, collate_fn=task.collate_fn())
    batches = [batch for batch, _ in zip(loader, range(s.pick(3, 1)))]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def window(threaded: bool):
        def run() -> int:
            detection_model.THREADED = threaded
            try:
                for batch in batches:
                    losses = task.training_step(model, batch)
                    optimizer.zero_grad(set_to_none=True)
                    sum(losses.values()).backward()
                    optimizer.step()
            finally:
                detection_model.THREADED = True
            return 8 * len(batches)
        return run

    _log(f"[detection] RoIAlign and RPN on every thread, demo training step at {torch.get_num_threads()} threads")
    c = compare(alternate({"threaded": window(True), "torchvision": window(False)}, s.pick(7, 1), log=_log),
                "threaded", "torchvision")
    return ["", f"**RoIAlign and RPN on every thread.** The detection demo's training step (`configs/detection/` "
            f"default: half-width ResNet-18, FPN, 160 px; fresh weights, {len(batches)} built-in shapes batches of 8 per "
            f"window, AdamW) at {torch.get_num_threads()} torch threads: our RoI pooler runs torchvision's forward and "
            "backward kernels on slices of the channels, one per thread, and our RPN filters the images' proposals "
            "(NMS) several images at once, against torchvision's own one-thread code. The pooled values, gradients "
            "and proposals are equal (`test_roi_pooling_on_every_thread_equals_torchvision`, "
            "`test_rpn_proposals_filtered_on_every_thread_equal_torchvisions`); at 1 thread both run torchvision's "
            "code.", "",
            "| training step | threaded img/s | torchvision img/s | speed-up | round ratios min–max | windows |",
            "|---|---:|---:|---:|---|---:|",
            f"| detection demo, batch 8 | {c.a:.2f} | {c.b:.2f} | **{c.ratio:.3f}** | {c.low:.3f}–{c.high:.3f} | "
            f"{c.windows} |"]


def _bench_evaluation(s) -> list[str]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from resvision.datasets.shapes import load_shapes
    from resvision.tasks.detection.evaluator import evaluate_coco_results

    data = load_shapes("val")
    g = torch.Generator().manual_seed(0)
    results = []
    for ann in data.coco_gt["annotations"]:  # jittered true boxes + random false positives
        x, y, w, h = ann["bbox"]
        jitter = (torch.rand(4, generator=g) - 0.5) * 6
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                        "bbox": [x + float(jitter[0]), y + float(jitter[1]), w + float(jitter[2]), h + float(jitter[3])],
                        "score": float(torch.rand(1, generator=g))})
    for image in data.coco_gt["images"]:
        for _ in range(20):
            x, y = (float(v) for v in torch.rand(2, generator=g) * 100)
            results.append({"image_id": image["id"], "category_id": data.category_ids[0], "bbox": [x, y, 30.0, 30.0],
                            "score": float(torch.rand(1, generator=g)) * 0.5})

    def ours() -> int:
        evaluate_coco_results(data.coco_gt, results)
        return 1

    def pycocotools_only() -> int:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = data.coco_gt
            gt.createIndex()
            ev = COCOeval(gt, gt.loadRes(results), "bbox")
            ev.evaluate(), ev.accumulate(), ev.summarize()
        return 1

    _log(f"[detection] evaluation of {len(results)} detections on {len(data.coco_gt['images'])} images")
    rates = alternate({"resvision": ours, "pycocotools": pycocotools_only}, s.pick(5, 2), log=_log)
    seconds = {k: 1 / statistics.median(v) for k, v in rates.items()}
    return ["| evaluation of the shapes val set | seconds (median) | windows |", "|---|---:|---:|",
            f"| resvision: COCO (pycocotools) + VOC07 + VOC12 + per-class tables | {seconds['resvision']:.3f} | {len(rates['resvision'])} |",
            f"| pycocotools COCOeval alone (evaluate + accumulate + summarize) | {seconds['pycocotools']:.3f} | {len(rates['pycocotools'])} |",
            "", f"{len(results)} detections (jittered ground truth + 20 low-score false positives per image) on "
            f"{len(data.coco_gt['images'])} images; our evaluation costs {seconds['resvision'] / seconds['pycocotools']:.2f}x "
            "pycocotools alone because it adds the VOC protocol and per-class tables."]
