"""Face benchmarks for ``tools/benchmark.py`` (``--only face``).

1. Training: a real Trainer running the face task (backbone + embedding head + ArcFace margin head, the
   demo's model) against a bare PyTorch loop over a copy of the same model, on the same pre-made batches;
   a second bare loop is the noise control.
2. Embedding extraction (the LFW protocol's image + mirror embedding) against one plain forward pass.
3. Alignment: MTCNN detection + the similarity warp onto the ArcFace template against MTCNN detection alone,
   on scikit-image's astronaut photo (512x512, one face).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from resvision.benchmarks.measure import alternate, compare

LR = 0.01
_MODEL = ["model.backbone.name=custom", "model.backbone.custom={block: basic, layers: [2, 2, 2, 2], widths: [32, 64, 128, 256]}",
          "model.embedding_size=128", "model.margin=arcface", "model.scale=32.0"]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _first(items):
    return items[0]


def _trainer(batches, classes: int, size: int, run_dir: Path):
    """A real Trainer whose face task serves the pre-made batches (no decoding, no collation)."""
    from resvision import Trainer, load_config
    from resvision.tasks.face.task import FaceDataInfo, FaceTask

    class PremadeFaceTask(FaceTask):
        def build_datasets(self, training=True):
            return FaceDataInfo(batches, batches[:1], [str(i) for i in range(classes)])

        def collate_fn(self):
            return _first

    cfg = load_config("face", [*_MODEL, f"data.image_size={size}", "train.batch_size=1", "train.num_workers=0",
                               "train.epochs=100000", "train.progress=false", "train.log_every=1000000000",
                               "train.device=cpu", "train.amp='off'", "optim.name=momentum", f"optim.lr={LR}",
                               "optim.momentum=0.9", "optim.weight_decay=1.0e-4", "sched.name=cosine",
                               "sched.warmup_epochs=0", f"output={run_dir}"])
    trainer = Trainer(PremadeFaceTask(cfg))
    trainer.setup()
    return trainer


def _bare(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
    model.train()

    def window() -> int:
        for x, y in batches:
            opt.zero_grad()
            F.cross_entropy(model(x, y), y).backward()
            opt.step()
        return sum(len(y) for _, y in batches)
    return window


def bench_face(s) -> list[str]:
    """``s``: the tool's Settings (``pick``, ``windows``, ``command``)."""
    import copy

    from resvision.tasks.face.model import flip_embeddings

    size, batch, classes, steps = 64, 64, 240, s.pick(6, 1)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch, 3, size, size, generator=g), torch.randint(0, classes, (batch,), generator=g))
               for _ in range(steps)]
    with tempfile.TemporaryDirectory(prefix="resvision-bench-face-") as tmp:
        trainer = _trainer(batches, classes, size, Path(tmp))
        variants = {"resvision": lambda: (trainer.train_one_epoch(), steps * batch)[1]}
        for name in ("bare", "bare copy"):
            model = copy.deepcopy(trainer.model)
            variants[name] = _bare(model, batches)
        _log(f"[face] training {size}x{size}, batch {batch}, {steps} step(s)/window")
        rates = alternate(variants, s.pick(11, 2), warmup=1, log=_log)
    train, control = compare(rates, "resvision", "bare"), compare(rates, "bare copy", "bare")

    model = copy.deepcopy(trainer.model).eval()
    images = batches[0][0]

    def embed(fn):
        def window() -> int:
            with torch.inference_mode():
                fn(images)
            return len(images)
        return window

    _log("[face] embedding extraction")
    emb = compare(alternate({"flip": embed(lambda x: flip_embeddings(model, x)), "plain": embed(model)},
                            s.windows, log=_log), "flip", "plain")

    import numpy as np
    from skimage.data import astronaut

    from resvision.tasks.face.align import FaceAligner

    photo = astronaut()
    aligner = FaceAligner()
    reps = s.pick(4, 1)

    def detect_only() -> int:
        for _ in range(reps):
            aligner.detect(photo)
        return reps

    def align() -> int:
        for _ in range(reps):
            crop = aligner.align(photo)
            assert crop is not None and np.asarray(crop).shape == (112, 112, 3)
        return reps

    _log("[face] MTCNN alignment, astronaut 512x512")
    al = compare(alternate({"align": align, "detect": detect_only}, s.windows, log=_log), "align", "detect")

    return ["## Face: trainer vs a bare loop, embedding extraction, MTCNN alignment", "",
            f"**Training.** `Trainer.train_one_epoch()` running the face task (a dataset whose items are pre-made "
            f"batches) on the demo's model: half-width ResNet-18 (`custom`, basic blocks, widths 32-256), "
            f"BN-dropout-linear-BN embedding head (128-d), ArcFace margin head (s=32, m=0.5) over {classes} identities, "
            f"{size}x{size} inputs, batch {batch}, SGD momentum 0.9 in both; `bare` is `F.cross_entropy(model(x, y), y)` "
            f"on a copy of the same model with the same starting weights; `bare copy` a second bare loop (noise "
            f"control). {steps} step(s) per window.", "",
            "| what | A img/s | B img/s | A ÷ B | round ratios min–max | windows | target |", "|---|---:|---:|---:|---|---:|---|",
            f"| resvision ÷ bare | {train.a:.1f} | {train.b:.1f} | **{train.ratio:.3f}** | {train.low:.3f}–{train.high:.3f} | "
            f"{train.windows} | ≥ 0.97: {'met' if train.ratio >= 0.97 else '**not met**'} |",
            f"| bare copy ÷ bare | {control.a:.1f} | {control.b:.1f} | {control.ratio:.3f} | {control.low:.3f}–{control.high:.3f} | "
            f"{control.windows} | – |", "",
            f"**Embedding extraction** of the same model in eval mode, batch {batch}: `flip_embeddings` (image + mirror, "
            f"summed and normalised: the LFW protocol and `predict`) {emb.a:.1f} img/s against one plain forward pass "
            f"{emb.b:.1f} img/s: ratio {emb.ratio:.3f} (two forward passes: 0.5 is the ideal).", "",
            f"**Alignment** (`FaceAligner`, facenet-pytorch's MTCNN on the CPU, {reps} image(s) per window) of "
            f"scikit-image's astronaut photo (512x512, one face): detect + warp onto the 112x112 ArcFace template "
            f"{al.a:.2f} img/s, MTCNN detection alone {al.b:.2f} img/s (ratio {al.ratio:.3f}: the warp costs "
            f"{max(0.0, 1 / al.ratio - 1) * 100:.1f}% on top of detection).", "",
            f"Command: `{s.command} --only face`"]
