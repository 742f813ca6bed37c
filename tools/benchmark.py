#!/usr/bin/env python
"""Speed benchmarks of resvision; every figure is a ratio against a reference timed in the same run.

Usage: ``python tools/benchmark.py [--output docs/benchmarks.md] [--quick] [--only NAME ...] [--device cuda]``
(``make bench`` writes docs/benchmarks.md). Benchmarks: ``trainer`` (Trainer loop vs a bare PyTorch
loop), ``reference`` (Trainer loop vs torchvision's reference classification loop), ``monitor`` (the cost of
``train.monitor_gradients``), ``pipeline``
(JPEG decode + augmentation vs torchvision.transforms.v2) and ``inference`` (ResNet-50 eager /
channels_last / torch.compile vs this machine's fp32 matmul rate) and ``detection`` (our Faster R-CNN
vs torchvision's, training and inference; evaluation cost vs pycocotools alone) and ``segmentation``
(our U-Net-ResNet-34 vs smp's in the same loop; sliding-window vs whole-image inference at 512x512) and ``face``
(the face task's trainer vs a bare loop; flip-summed embedding extraction; MTCNN alignment) and ``deploy``
(ResNet-50 on eager / channels_last / torch.compile / ONNX Runtime fp32 / INT8, batch-1 latency; Faster R-CNN
in ONNX Runtime vs eager torch, with ONNX Runtime's per-operator profile).

Method (``benchmarks/measure.py``): the variants being compared run in alternating windows
(A, B, A, B, ...) after discarded warm-up windows, so slow drifts of the machine hit both sides alike;
each side's figure is the median of its windows' throughputs. Each section runs in a fresh process (``trainer``
and ``reference`` share one: they share windows), because a process's history changes its speed: glibc's
allocator state alone moved eager ResNet-50 between 13 and 20 img/s (docs/benchmarks.md, "Deploy"). Helpers live
in ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from resvision.benchmarks.loops import LR, TrainCase, training_variants
from resvision.benchmarks.measure import (
    Comparison,
    alternate,
    compare,
    cpu_seconds,
    matmul_window,
    others_note,
    try_compile,
)

THREADS = 2
BENCHMARKS = ("trainer", "reference", "monitor", "pipeline", "inference", "detection", "segmentation", "face", "deploy",
              "joint", "cli")
COMMAND = ".venv/bin/python tools/benchmark.py"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


GPU_SECTIONS = ("joint",)  # sections that also run on a CUDA device (--device cuda)


@dataclass
class Settings:
    quick: bool
    device: str = "cpu"

    def pick(self, full, quick):
        return quick if self.quick else full

    @property
    def windows(self) -> int:
        return self.pick(7, 2)

    @property
    def command(self) -> str:
        return COMMAND + (" --quick" if self.quick else "") + (f" --device {self.device}" if self.device != "cpu" else "")


# ------------------------------------------------------------------------------- training loops
_TRAINING_RATES: dict[bool, tuple[list[tuple[TrainCase, dict[str, list[float]]]], str]] = {}


def _training_rates(s: Settings) -> tuple[list[tuple[TrainCase, dict[str, list[float]]]], str]:
    """One four-way alternation per case, shared by both training sections; also the note on other processes."""
    if s.quick not in _TRAINING_RATES:
        cases = [TrainCase("resnet18", 224, 16, 1000, s.pick(2, 1), s.pick(9, 2)),
                 TrainCase("resnet20", 32, 128, 10, s.pick(4, 1), s.pick(15, 2))]
        results, cpu, start = [], cpu_seconds(), time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="resvision-bench-") as tmp:
            for case in cases:
                _log(f"[training] {case.label}")
                variants = training_variants(case, Path(tmp) / case.arch)
                results.append((case, alternate(variants, case.windows, warmup=2, log=_log)))
        _TRAINING_RATES[s.quick] = results, others_note(cpu, cpu_seconds(), time.perf_counter() - start)
    return _TRAINING_RATES[s.quick]


def _compare_table(rows: list[tuple[str, str, str, Comparison, float | None]]) -> list[str]:
    """Rows of ``(case, A, B, comparison of A with B, target for A ÷ B or None)``."""
    targets = any(target for *_, target in rows)
    lines = ["| case | A | B | A img/s (median) | B img/s (median) | A ÷ B | round ratios: median (min–max) | windows |"
             + (" target |" if targets else ""), "|---|---|---|---:|---:|---:|---:|---:|" + ("---|" if targets else "")]
    for case, a, b, c, target in rows:
        met = "" if not targets else " – |" if target is None else f" ≥ {target}: {'met' if c.ratio >= target else '**not met**'} |"
        lines.append(f"| {case} | {a} | {b} | {c.a:.2f} | {c.b:.2f} | **{c.ratio:.3f}** | "
                     f"{c.round_median:.3f} ({c.low:.3f}–{c.high:.3f}){' noisy' if c.noisy else ''} | {c.windows} |{met}")
    return lines


_TRAINER_TEXT = (
    "`resvision` is `Trainer.train_one_epoch()` after `Trainer.setup()`: DataLoader (num_workers=0) + "
    "DistributedSampler over a dataset whose items are the pre-made batches (DataLoader batch_size=1 and a collate "
    "that unwraps the item: no decoding, no per-sample collation), `ClassificationTask.training_step`, the "
    "finite-loss check, the per-step loss `float()`s, timm's `momentum` optimizer (SGD, momentum 0.9, no Nesterov) "
    "over the fine-tuning param groups (weight decay 1e-4 on weights, 0 on norms and biases), "
    "`scheduler.step_update` (timm cosine) every step and the callbacks' step event (metrics rows every 1e9 steps; "
    "checkpoints are written per epoch, outside this loop; progress bar off).")
_OTHER_TEXT = {
    "bare": "`bare` is `for x, y in batches: opt.zero_grad(); loss = F.cross_entropy(model(x), y); loss.backward(); "
            "opt.step()` with `torch.optim.SGD(model.parameters(), momentum=0.9, weight_decay=1e-4)`. `bare copy` is "
            "the same loop on a second copy of the model: `bare copy ÷ bare` shows what a ratio looks like when the "
            "two sides are identical, i.e. the noise floor of this machine and method.",
    "torchvision-ref": "`torchvision-ref` re-implements the per-step logic of torchvision's "
            "`references/classification/train.py::train_one_epoch` (forward, criterion, zero_grad, backward, step, "
            "top-1/5 accuracy, `.item()` into MetricLogger-style meters every step, a formatted log line every 10 "
            "steps into an in-memory sink; no gradient clipping, AMP or EMA) with `torch.optim.SGD` over "
            "`model.parameters()` (momentum 0.9, weight decay 1e-4).",
}


def bench_training(s: Settings, name: str) -> list[str]:
    other, target, title = {
        "trainer": ("bare", 0.97, "Trainer overhead vs a bare PyTorch loop"),
        "reference": ("torchvision-ref", 1.0, "Trainer vs torchvision's reference classification loop"),
    }[name]
    rows, (results, note) = [], _training_rates(s)
    for case, rates in results:
        rows.append((case.label, "resvision", other, compare(rates, "resvision", other), target))
        if name == "trainer":
            rows.append((case.label, "bare copy", "bare", compare(rates, "bare copy", "bare"), None))
    return [f"## {title}", "", _TRAINER_TEXT + " " + _OTHER_TEXT[other],
            "Four loops (resvision, bare, torchvision-ref, bare copy) run in one alternation, in that order each "
            "round after two discarded warm-up rounds, on separate copies of the same "
            f"`ImageClassifier(build_backbone(arch), classes)` with identical starting weights and the same list of "
            f"random-normal batches; lr {LR}, fp32, {THREADS} threads. Both training sections come from the same windows.",
            "", *_compare_table(rows), "",
            f"Command: `{s.command} --only {name}` (runs the same four-way alternation)", "", note]


def bench_monitor(s: Settings) -> list[str]:
    """What ``train.monitor_gradients`` costs: the same Trainer with the monitor off, every 10 and every step."""
    from resvision.benchmarks.loops import make_trainer

    rows = []
    with tempfile.TemporaryDirectory(prefix="resvision-bench-monitor-") as tmp:
        for case in (TrainCase("resnet20", 32, 128, 10, s.pick(10, 2), s.windows),
                     TrainCase("resnet50", 224, 16, 1000, s.pick(2, 1), s.pick(5, 2))):
            g = torch.Generator().manual_seed(0)
            batches = [(torch.randn(case.batch, 3, case.size, case.size, generator=g),
                        torch.randint(0, case.classes, (case.batch,), generator=g)) for _ in range(case.steps)]
            variants = {}
            for name, extra in (("off", ()), ("every 10", ("train.monitor_gradients=true", "train.gradient_monitor_every=10")),
                                ("every step", ("train.monitor_gradients=true", "train.gradient_monitor_every=1"))):
                trainer = make_trainer(case, batches, Path(tmp) / f"{case.arch}-{name}", extra)
                variants[name] = lambda t=trainer, c=case: (t.train_one_epoch(), c.steps * c.batch)[1]
            _log(f"[monitor] {case.label}")
            rates = alternate(variants, case.windows, warmup=1, log=_log)
            for name in ("every 10", "every step"):
                rows.append((case.label, f"monitor {name}", "monitor off", compare(rates, f"{name}", "off"), None))
    return ["## Gradient-flow monitor: its cost", "",
            "The Trainer loop of the sections above (pre-made batches, SGD momentum) with `train.monitor_gradients=true` "
            "at `train.gradient_monitor_every=10` (default) and `=1` (worst case) against the same loop with the "
            "monitor off, in one alternation. A check computes every stage's gradient norm, copies the weights and "
            "measures the update after the step, and appends one metrics.jsonl row.", "",
            *_compare_table(rows), "", f"Command: `{s.command} --only monitor`"]


# ------------------------------------------------------------------------------- input pipeline
def _write_jpegs(root: Path, count: int) -> None:
    """``count`` real-photo JPEGs (~500x375, crops of scikit-image's bundled colour photos) in class folders."""
    import numpy as np
    import skimage.data
    from PIL import Image

    photos = {n: getattr(skimage.data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket",
                                                       "hubble_deep_field", "immunohistochemistry", "retina")}
    rng = np.random.default_rng(0)
    for i in range(count):
        name = list(photos)[i % len(photos)]
        pixels = photos[name]
        h, w = pixels.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        size = (500, 375) if i % 4 else (375, 500)  # mostly landscape, some portrait
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[y:y + ch, x:x + cw]).resize(size, Image.BILINEAR).save(folder / f"{i:04d}.jpg", quality=90)


def bench_pipeline(s: Settings) -> list[str]:
    from torch.utils.data import DataLoader
    from torchvision import datasets as tv_datasets
    from torchvision.transforms import v2

    from resvision.datasets import build_classification_datasets, classification_transforms

    count, batch = s.pick(256, 64), 32
    rows = []
    with tempfile.TemporaryDirectory(prefix="resvision-bench-jpeg-") as tmp:
        root = Path(tmp)
        _write_jpegs(root, count)
        ours, _ = build_classification_datasets("folder", train=root, val=root,
                                                train_transform=classification_transforms(True, 224),
                                                val_transform=classification_transforms(False, 224))
        theirs = tv_datasets.ImageFolder(str(root), v2.Compose([
            v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(), v2.ColorJitter(0.4, 0.4, 0.4),
            v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]))
        for workers in (0, 2):
            def epoch(dataset, workers=workers):
                loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=workers, persistent_workers=False)
                return sum(len(images) for images, _ in loader)

            _log(f"[pipeline] num_workers={workers}")
            rates = alternate({"resvision": lambda: epoch(ours), "torchvision": lambda: epoch(theirs)}, s.windows, log=_log)
            rows.append((f"{count} JPEGs, batch {batch}, num_workers={workers}", "resvision", "torchvision",
                         compare(rates, "resvision", "torchvision"), None))
    lines = _compare_table(rows)
    return ["## Input pipeline: JPEG decode + augmentation", "",
            f"{count} real photos (random crops of scikit-image's bundled colour photos, resized to 500x375 or 375x500, "
            "JPEG quality 90, 7 class folders) read through a `DataLoader(batch_size=32, shuffle=False, "
            "persistent_workers=False)`; one window = one full pass, worker start-up included (as in the Trainer, "
            "which does not keep workers between epochs). `resvision`: `build_classification_datasets(\"folder\", ...)` "
            "train set with `classification_transforms(True, 224)` (Pillow decode + EXIF transpose, albumentations "
            "RandomResizedCrop / HorizontalFlip / ColorJitter(0.4, 0.4, 0.4) / Normalize, per-sample reseeding). "
            "`torchvision`: `torchvision.datasets.ImageFolder` (Pillow) + `transforms.v2` RandomResizedCrop(224) / "
            "RandomHorizontalFlip / ColorJitter(0.4, 0.4, 0.4) on the PIL image, then ToImage / ToDtype / Normalize.",
            "", *lines, "", f"Command: `{s.command} --only pipeline`"]


# ------------------------------------------------------------------------------------ inference
def bench_inference(s: Settings) -> list[str]:
    from torch.utils.flop_counter import FlopCounterMode

    from resvision.backbone import build_backbone
    from resvision.tasks.classification import ImageClassifier

    batch, n, mms = 16, 2048, s.pick(10, 5)
    torch.manual_seed(0)
    model = ImageClassifier(build_backbone("resnet50"), 1000).eval()
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x[:1])
    flops_per_image = counter.get_total_flops()  # 2 x multiply-accumulates of convolutions and the fc
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    def images(fn, inputs):
        def window() -> int:
            with torch.inference_mode():
                fn(inputs)
            return batch
        return window

    variants = {"eager": images(model, x), "channels_last": images(model_cl, x_cl)}
    compiled, compile_note = None, "torch.compile: skipped under --quick (compiling takes over a minute on 2 cores)."
    if not s.quick:
        compiled, compile_note = try_compile(model, x)
    if compiled is not None:
        variants["torch.compile"] = images(compiled, x)
    variants["fp32 matmul"] = matmul_window(n, mms)
    _log(f"[inference] resnet50 224x224 batch {batch}; {compile_note}")
    rates = alternate(variants, s.windows, log=_log)
    peak = statistics.median(rates["fp32 matmul"])
    eager = statistics.median(rates["eager"])
    lines = ["| variant | img/s (median) | GFLOP/s | fraction of matmul rate | ÷ eager | windows |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in variants:
        if name == "fp32 matmul":
            continue
        med = statistics.median(rates[name])
        lines.append(f"| {name} | {med:.2f} | {med * flops_per_image / 1e9:.1f} | **{med * flops_per_image / peak:.3f}** "
                     f"| {med / eager:.3f} | {len(rates[name])} |")
    lines.append(f"| fp32 `torch.mm` {n}x{n} (reference) | – | {peak / 1e9:.1f} | 1 | – | {len(rates['fp32 matmul'])} |")
    return ["## Inference: ResNet-50 against this machine's matmul rate", "",
            f"`ImageClassifier(build_backbone(\"resnet50\"), 1000)` in eval mode under `torch.inference_mode()`, "
            f"batch {batch} at 224x224, one batch per window; {flops_per_image / 1e9:.2f} GFLOP per image "
            "(2 x multiply-accumulates counted by `torch.utils.flop_counter.FlopCounterMode`). The reference is "
            f"`torch.mm` of two {n}x{n} fp32 matrices ({mms} per window, 2·{n}³ FLOP each), alternated with "
            "the model windows; 'fraction of matmul rate' = model FLOP/s ÷ matmul FLOP/s. `channels_last` converts "
            "the model and the input; `torch.compile` compiles the default-layout eager model.", "",
            *lines, "", compile_note, "", f"Command: `{s.command} --only inference`"]


# --------------------------------------------------------------------------------------- report
def machine_header(command: str, started: datetime.datetime, seconds: float, load: tuple[float, float],
                   device: str = "cpu") -> list[str]:
    import torchvision

    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    field = lambda key: next((line.split(":", 1)[1].strip() for line in info if line.startswith(key)), "")  # noqa: E731
    flags = set(field("flags").split())
    simd = ", ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags) or "unknown"
    return ["# Benchmarks", "",
            f"Written by `{command}` on {started:%Y-%m-%d %H:%M} UTC in {seconds / 60:.1f} min "
            "(`make bench` runs it with `--output docs/benchmarks.md`).", "",
            f"- Machine: {field('model name') or platform.processor() or 'unknown CPU'} ({simd}), "
            f"{os.cpu_count()} logical cores, Linux {platform.release()}",
            *([f"- GPU: {torch.cuda.get_device_name()} (the models run there; CUDA {torch.version.cuda})"]
              if device == "cuda" else []),
            f"- torch {torch.__version__}, torchvision {torchvision.__version__}, Python {platform.python_version()}",
            f"- `torch.set_num_threads({THREADS})`; DataLoader workers run 1 torch thread each (PyTorch's default)",
            f"- 1-minute load average when the run started / ended: {load[0]:.2f} / {load[1]:.2f}", "",
            "**How to read it.** Every figure is a ratio of two things timed in the same process and run. The "
            "variants run in alternating windows (A, B, A, B, ... with warm-up windows discarded); a side's "
            "throughput is the median of its windows and **A ÷ B** is median ÷ median. 'Round ratios' are the ratios "
            "of the two windows of each round: their median is a second estimate that cancels slow drifts of the "
            "machine, their range shows the window-to-window noise; `noisy` marks a ratio whose rounds stray more than ±10 % "
            "from it (not a figure to quote). A difference smaller than that noise is a tie; "
            "the `bare copy ÷ bare` rows (two identical loops) show how far from 1 a ratio lands by chance alone. "
            "Throughputs are of this machine only; ratios carry over better. Each section ends with the command "
            "that reproduces it, and says how much CPU other processes took meanwhile.", ""]


def bench_detection(s: Settings) -> list[str]:
    from resvision.benchmarks.detection import bench_detection as run  # imported only when asked: slow imports

    return run(s)


def bench_segmentation(s: Settings) -> list[str]:
    from resvision.benchmarks.segmentation import bench_segmentation as run  # imported only when asked: slow imports

    return run(s)


def bench_deploy(s: Settings) -> list[str]:
    from resvision.benchmarks.deploy import bench_deploy as run  # imported only when asked: slow imports

    return run(s)


def bench_face(s: Settings) -> list[str]:
    from resvision.benchmarks.face import bench_face as run  # imported only when asked: slow imports

    return run(s)


def bench_joint(s: Settings) -> list[str]:
    from resvision.benchmarks.joint import bench_joint as run  # imported only when asked: slow imports

    return run(s)


def bench_cli(s: Settings) -> list[str]:
    """How long the command line takes to answer before any work: each command a fresh interpreter, the cases in
    alternating rounds, medians; against the interpreter's own start (``python -c pass``), the floor."""
    cli = [sys.executable, "-m", "resvision.cli"]
    cases = {"python -c pass (interpreter start)": [sys.executable, "-c", "pass"],
             "resvision --help": [*cli, "--help"], "resvision train --help": [*cli, "train", "--help"],
             "resvision train --bogus (rejected)": [*cli, "train", "--bogus"],
             "resvision predict --help (every task's options)": [*cli, "predict", "--help"],
             "import resvision; resvision.Trainer (torch and the engine)": [sys.executable, "-c",
                                                                            "import resvision; resvision.Trainer"]}
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(s.pick(5, 2)):
        for name, argv in cases.items():
            start = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=False)
            seconds[name].append(time.perf_counter() - start)
    floor = statistics.median(seconds["python -c pass (interpreter start)"])
    lines = ["| command | wall s (median) | min–max | ÷ interpreter start |", "|---|---:|---:|---:|"]
    for name, values in seconds.items():
        median = statistics.median(values)
        lines.append(f"| `{name}` | {median:.2f} | {min(values):.2f}–{max(values):.2f} | {median / floor:.1f} |")
    return ["## Command line: time to answer", "",
            "Each command in a fresh interpreter, alternating rounds; the package and the tasks are imported on first "
            "use, so `--help` and a mistyped option answer before torch is loaded (target: < 1 s).", "", *lines, "",
            f"Command: `{s.command} --only cli`"]


RUNNERS = {"trainer": lambda s: bench_training(s, "trainer"), "reference": lambda s: bench_training(s, "reference"),
           "monitor": bench_monitor,
           "pipeline": bench_pipeline, "inference": bench_inference,
           "detection": bench_detection, "segmentation": bench_segmentation, "face": bench_face,
           "deploy": bench_deploy, "joint": bench_joint, "cli": bench_cli}


SHARED_WINDOWS = ({"trainer", "reference"},)  # sections computed from one alternation: one process for both


def _in_fresh_process(names: list[str], s: Settings) -> tuple[list[str], list[str]]:
    """Run ``names`` (one section, or sections that share windows) in a new process: ``(sections, failed)``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sections.json"
        subprocess.run([sys.executable, __file__, *(["--quick"] if s.quick else []), f"--device={s.device}",
                        *(f"--only={n}" for n in names), "--sections-json", str(out)], check=False)
        if not out.is_file():  # the child died before writing (killed, out of memory)
            return [f"## {n}\n\nFailed: the section's process ended without a result." for n in names], names
        result = json.loads(out.read_text())
    return result["sections"], result["failed"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="write the markdown report here (default: print only)")
    parser.add_argument("--quick", action="store_true", help="fewer and smaller windows: a sanity run, not figures to quote")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help=f"where the models run; cuda: the {', '.join(GPU_SECTIONS)} section(s) only")
    parser.add_argument("--sections-json", type=Path, help=argparse.SUPPRESS)  # a child of _in_fresh_process
    args = parser.parse_args(argv)
    if args.device == "cuda":
        if not set(args.only or BENCHMARKS) <= set(GPU_SECTIONS):
            parser.error(f"--device cuda: only {', '.join(GPU_SECTIONS)} run on a GPU; add --only "
                         f"{' --only '.join(GPU_SECTIONS)}")
        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device here")
    torch.set_num_threads(THREADS)
    os.environ.setdefault("RESVISION_OFFLINE", "1")
    settings = Settings(args.quick, args.device)
    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    load_start = os.getloadavg()[0]
    sections, failed = [], []
    names = list(dict.fromkeys(args.only or BENCHMARKS))
    groups = [[n for n in names if n in shared] for shared in SHARED_WINDOWS if shared & set(names)]
    groups += [[n] for n in names if not any(n in shared for shared in SHARED_WINDOWS)]
    if len(groups) > 1 and not args.sections_json:
        for group in sorted(groups, key=lambda g: names.index(g[0])):
            got, bad = _in_fresh_process(group, settings)
            sections += got
            failed += bad
        names = []
    for name in names:
        cpu, start = cpu_seconds(), time.perf_counter()
        try:
            section = RUNNERS[name](settings)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not lose the others' figures
            failed.append(name)
            _log(f"[{name}] failed:\n{traceback.format_exc()}")
            section = [f"## {name}", "", f"Failed: `{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[-1]}`",
                       "", f"Command: `{settings.command} --only {name}`"]
        if name in ("monitor", "pipeline", "inference", "detection", "segmentation", "face", "deploy", "joint"):  # the training sections carry their own note (shared windows)
            section += ["", others_note(cpu, cpu_seconds(), time.perf_counter() - start)]
        print("\n".join(section) + "\n", flush=True)
        sections.append("\n".join(section))
    if args.sections_json:
        args.sections_json.write_text(json.dumps({"sections": sections, "failed": failed}))
        return 1 if failed else 0
    command = " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    header = machine_header(command, started, time.perf_counter() - t0, (load_start, os.getloadavg()[0]), settings.device)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(header) + "\n" + "\n\n".join(sections) + "\n")
        print(f"wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
