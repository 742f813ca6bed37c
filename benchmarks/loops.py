"""The training loops that tools/benchmark.py compares, all fed the same pre-made batches.

* ``resvision``: a real :class:`resvision.Trainer` whose task serves the batches (:func:`make_trainer`);
* ``bare``: the minimal PyTorch loop;
* ``torchvision-ref``: the per-step logic of torchvision's ``references/classification/train.py``.
"""

from __future__ import annotations

import io
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["LR", "TrainCase", "bare_loop", "make_trainer", "torchvision_loop", "training_variants"]

LR = 0.01


@dataclass
class TrainCase:
    arch: str
    size: int
    batch: int
    classes: int
    steps: int  # optimizer steps per window
    windows: int

    @property
    def label(self) -> str:
        return f"{self.arch} {self.size}x{self.size}, batch {self.batch}, {self.steps} step(s)/window"


def _first(items):
    """Collate for a dataset whose items are whole pre-made batches (DataLoader batch_size=1)."""
    return items[0]


def make_trainer(case: TrainCase, batches, run_dir: Path, extra: tuple[str, ...] = ()):
    """A real ``resvision.Trainer`` whose task serves the pre-made batches (no decoding, no collation);
    ``extra``: more config overrides."""
    from resvision import Trainer, load_config
    from resvision.tasks import DataInfo
    from resvision.tasks.classification.task import ClassificationTask

    class PremadeTask(ClassificationTask):
        def build_datasets(self, training=True):
            items = [(x, y, torch.arange(len(y))) for x, y in batches]
            return DataInfo(items, items[:1], [str(i) for i in range(case.classes)])

        def collate_fn(self):
            return _first

    cfg = load_config("classification", [
        f"model.backbone.name={case.arch}", f"model.num_classes={case.classes}", "model.label_smoothing=0.0",
        "model.dropout=0.0", f"data.image_size={case.size}", "train.batch_size=1", "train.num_workers=0",
        "train.epochs=100000", "train.progress=false", "train.log_every=1000000000", "train.device=cpu",
        "train.amp='off'", "optim.name=momentum", f"optim.lr={LR}", "optim.momentum=0.9", "optim.weight_decay=1.0e-4",
        "sched.name=cosine", "sched.warmup_epochs=0", f"output={run_dir}", *extra,
    ])
    trainer = Trainer(PremadeTask(cfg))
    trainer.setup()
    return trainer


def bare_loop(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
    model.train()

    def window() -> int:
        for x, y in batches:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        return sum(len(y) for _, y in batches)

    return window


class _Meter:
    """Windowed median + global average, the way torchvision's reference ``SmoothedValue`` keeps them."""

    def __init__(self, window: int = 20) -> None:
        self.values: deque[float] = deque(maxlen=window)
        self.total, self.count = 0.0, 0

    def update(self, value: float, n: int = 1) -> None:
        self.values.append(value)
        self.total += value * n
        self.count += n

    def __str__(self) -> str:
        median = torch.tensor(list(self.values)).median().item()
        return f"{median:.4f} ({self.total / max(self.count, 1):.4f})"


def _topk_accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1, 5)) -> list[torch.Tensor]:
    """Percent of rows whose target is among the k highest logits, for each k."""
    with torch.inference_mode():
        _, pred = output.topk(max(topk), dim=1, largest=True, sorted=True)
        hit = pred.t().eq(target[None])
        return [hit[:k].flatten().sum(dtype=torch.float32) * (100.0 / target.size(0)) for k in topk]


def torchvision_loop(model, batches, print_freq: int = 10):
    """The per-step logic of torchvision's references/classification/train.py ``train_one_epoch``.

    forward, criterion, zero_grad, backward, step, top-1/5 accuracy, ``.item()`` into the meters
    every step, and the MetricLogger's iteration/data timing with a formatted log line every
    ``print_freq`` steps (written to an in-memory sink, so terminal I/O is not timed).
    """
    criterion = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
    sink = io.StringIO()

    def window() -> int:
        model.train()
        meters = {k: _Meter() for k in ("loss", "lr", "acc1", "acc5", "img/s", "time", "data")}
        end = time.time()
        for i, (image, target) in enumerate(batches):
            meters["data"].update(time.time() - end)
            start = time.time()
            output = model(image)
            opt.zero_grad()
            loss = criterion(output, target)
            loss.backward()
            opt.step()
            acc1, acc5 = _topk_accuracy(output, target)
            n = image.shape[0]
            meters["loss"].update(loss.item())
            meters["lr"].update(opt.param_groups[0]["lr"])
            meters["acc1"].update(acc1.item(), n=n)
            meters["acc5"].update(acc5.item(), n=n)
            meters["img/s"].update(n / (time.time() - start))
            meters["time"].update(time.time() - end)
            if i % print_freq == 0 or i == len(batches) - 1:
                eta = meters["time"].total / meters["time"].count * (len(batches) - i)
                sink.write(f"[{i}/{len(batches)}] eta {eta:.0f}s " + "  ".join(f"{k}: {m}" for k, m in meters.items()) + "\n")
            end = time.time()
        sink.seek(0)
        sink.truncate()
        return sum(len(y) for _, y in batches)

    return window


def training_variants(case: TrainCase, run_dir: Path) -> dict[str, Callable[[], int]]:
    """The Trainer, the bare loop, the torchvision-reference loop and a second bare loop (the noise
    control), each on its own copy of one model, all on one shared list of batches."""
    from resvision.backbone import build_backbone
    from resvision.tasks.classification import ImageClassifier

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(case.batch, 3, case.size, case.size, generator=g),
                torch.randint(0, case.classes, (case.batch,), generator=g)) for _ in range(case.steps)]
    trainer = make_trainer(case, batches, run_dir)
    variants = {"resvision": lambda: (trainer.train_one_epoch(), case.steps * case.batch)[1]}
    for name, loop in (("bare", bare_loop), ("torchvision-ref", torchvision_loop), ("bare copy", bare_loop)):
        model = ImageClassifier(build_backbone(case.arch), case.classes)
        model.load_state_dict(trainer.model.state_dict())  # same architecture, same starting weights
        variants[name] = loop(model, batches)
    return variants
