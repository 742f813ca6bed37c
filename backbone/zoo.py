"""The model zoo table: parameters, MACs and declared features of every registered ResNet.

Numbers are measured, not copied: each network is built on the ``meta`` device (shapes only, no
memory, no init cost) and its classifier forward pass is counted with
``torch.utils.flop_counter.FlopCounterMode``. That counter reports FLOPs = 2 x multiply-accumulates
for convolutions and matmuls; we report MACs, the unit of He et al. 2016, Table 1 ("FLOPs" there are
multiply-adds). BN, ReLU, pooling and the residual sums are not counted, as in the paper.

MACs are not time: ``zoo --measure`` (:func:`measure_throughput`) also times every classifier on this
machine's CPU, inference and one SGD training step, in alternating windows whose medians are reported,
so that a choice between variants can rest on measured images/s rather than on MACs alone.
"""

from __future__ import annotations

import argparse
import difflib
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resvision.backbone.base import Backbone, count_parameters
from resvision.backbone.registry import build_backbone
from resvision.backbone.resnet import CIFAR_ARCHS, PLAIN_ARCHS, TORCHVISION_ARCHS
from resvision.benchmarks.measure import alternate
from resvision.errors import ConfigError, UserError
from resvision.modes import eval_mode

__all__ = ["zoo_names", "zoo_row", "measure_classifier", "zoo_table", "measure_throughput", "format_zoo_table",
           "plot_zoo", "zoo_main"]

FORMATS = ("text", "markdown", "json")


def zoo_names() -> list[str]:
    """The registered fixed architectures (ImageNet, CIFAR, then the plain nets), i.e. everything but custom / timm."""
    return [*TORCHVISION_ARCHS, *CIFAR_ARCHS, *PLAIN_ARCHS]


def is_cifar(name: str) -> bool:
    """Whether ``name`` is of the CIFAR family (resnet20 ... 110 and their plain twins), i.e. 32x32 / 10 classes."""
    return PLAIN_ARCHS.get(name, name) in CIFAR_ARCHS


def _check_name(name: str) -> None:
    if name not in zoo_names():
        close = difflib.get_close_matches(name, zoo_names(), n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown backbone {name!r} for the zoo{hint} (`resvision zoo` lists them all; "
                          "custom and timm: models are not in it)")


def zoo_row(name: str, size: int | None = None) -> dict[str, Any]:
    """Measures one architecture as a classifier (backbone + global average pool + fc).

    ImageNet nets (and plain-18/34) are measured at 224x224 with a 1000-class fc, CIFAR nets (and plain-20 ...
    110) at 32x32 with 10 classes, the settings of the paper's tables.

    Args:
        name: A name from :func:`zoo_names`.
        size: Input side instead of the family's own (``zoo --image-size``); the classes stay the family's.

    Returns:
        ``{"name", "params", "params_M", "MACs", "MACs_G", "input", "num_classes", "features"}``, where
        ``features`` lists ``{"name", "channels", "stride"}`` of the backbone outputs.
    """
    _check_name(name)
    family_size, num_classes = (32, 10) if is_cifar(name) else (224, 1000)
    size = size or family_size
    with torch.device("meta"):
        backbone = build_backbone(name)
    params, macs = measure_classifier(backbone, size, num_classes)
    return {
        "name": name, "params": params, "params_M": round(params / 1e6, 3),
        "MACs": macs, "MACs_G": round(macs / 1e9, 3), "input": size, "num_classes": num_classes,
        "features": [{"name": s.name, "channels": s.channels, "stride": s.stride} for s in backbone.feature_specs],
    }


def measure_classifier(backbone: Backbone, size: int, num_classes: int) -> tuple[int, int]:
    """Parameters and MACs of ``backbone`` + global average pool + ``num_classes``-way fc.

    Runs on the backbone's device: build it under ``with torch.device("meta"):`` to measure without
    memory or compute (that is what :func:`zoo_row` does).

    Args:
        backbone: Any backbone; its deepest declared output feeds the fc.
        size: Side of the square input image, in pixels.
        num_classes: Classes of the fc.

    Returns:
        ``(parameters, multiply-accumulates)`` for one image.
    """
    device = next(backbone.parameters()).device
    with torch.device(device):
        fc = nn.Linear(backbone.out_channels, num_classes)
        image = torch.zeros(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), eval_mode(backbone):
        feature = backbone(image)[backbone.feature_specs[-1].name]
        fc(feature.mean((2, 3)))
    return count_parameters(backbone) + count_parameters(fc), counter.get_total_flops() // 2


def zoo_table(names: Sequence[str] | None = None, size: int | None = None) -> list[dict[str, Any]]:
    """One :func:`zoo_row` per architecture (default: all of :func:`zoo_names`), at ``size`` if given."""
    return [zoo_row(n, size) for n in (names or zoo_names())]


def _positive(what: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"zoo: {what} must be an integer >= 1, got {value}")


def measure_throughput(names: Sequence[str], image_size: int | None = None, batch: int = 8, windows: int = 3,
                       warmup: int = 1, threads: int | None = None, seed: int = 0,
                       clock: Callable[[], float] = time.perf_counter,
                       log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Inference and training images/s of each architecture's classifier on this machine's CPU.

    Every classifier is ``ImageClassifier(build_backbone(name), classes)`` in real memory, fed one fixed
    random-normal batch (the cost of a dense fp32 net does not depend on the values) at its family's size
    (224 / 1000 classes, CIFAR 32 / 10) or at ``image_size``. Two variants per name, in the order of
    ``names``, ``"<name>/infer"`` then ``"<name>/train"``: an inference window is one eval-mode forward under
    ``torch.inference_mode()``; a training window is one train-mode forward + cross-entropy + backward + SGD
    step (lr 0.01, momentum 0.9; gradients freed after the step, so only one net's gradients exist at a time).
    All variants run in one :func:`~resvision.benchmarks.measure.alternate` (every variant once per round,
    ``warmup`` rounds discarded) so that a slow spell of the shared machine hits every net alike; each
    rate is ``batch / window seconds`` and the reported figure is the median of the windows.

    Args:
        names: Names from :func:`zoo_names` (all nets are alive at once: memory is the sum of them).
        image_size: Input side for every net instead of the family's own.
        batch: Images per window.
        windows: Measured rounds.
        warmup: Discarded rounds before them (the first step allocates SGD's momentum buffers).
        threads: ``torch.set_num_threads`` during the measurement (restored after); ``None`` leaves it.
        seed: Seeds the weights and the inputs.
        clock: Seconds, passed to ``alternate`` (injectable for tests).
        log: Receives ``alternate``'s per-window lines.

    Returns:
        name -> ``{"infer_img_s", "train_img_s"}`` (medians) plus ``"infer_windows"`` and ``"train_windows"``
        (every measured window's images/s, in run order).
    """
    from resvision.tasks.classification import ImageClassifier  # tasks import the backbones, not the reverse

    _positive("--batch", batch)
    _positive("--windows", windows)
    if image_size is not None:
        _positive("--image-size", image_size)
    names = list(dict.fromkeys(names))  # a repeated name is one variant, not two nets under one key
    for name in names:
        _check_name(name)  # unknown names fail here, one line, before any net is built
    previous_threads = torch.get_num_threads()
    if threads is not None:
        _positive("--threads", threads)
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        variants: dict[str, Callable[[], float]] = {}
        for name in names:
            size, num_classes = (32, 10) if is_cifar(name) else (224, 1000)
            size = image_size or size
            model = ImageClassifier(build_backbone(name), num_classes)
            images = torch.randn(batch, 3, size, size, generator=generator)
            labels = torch.randint(num_classes, (batch,), generator=generator)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            variants[f"{name}/infer"], variants[f"{name}/train"] = _windows(model, optimizer, images, labels)
        rates = alternate(variants, windows, warmup=warmup, clock=clock, log=log)
    finally:
        torch.set_num_threads(previous_threads)
    return {name: {"infer_img_s": statistics.median(rates[f"{name}/infer"]),
                   "train_img_s": statistics.median(rates[f"{name}/train"]),
                   "infer_windows": rates[f"{name}/infer"], "train_windows": rates[f"{name}/train"]}
            for name in names}


def _windows(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
             labels: torch.Tensor) -> tuple[Callable[[], float], Callable[[], float]]:
    """The inference and the training window of one net; each returns the images it processed."""

    def infer() -> float:
        model.eval()
        with torch.inference_mode():
            model(images)
        return len(images)

    def train() -> float:
        model.train()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return len(images)

    return infer, train


def _rate(value: float) -> str:
    """Three significant figures or more, never scientific notation (CIFAR nets run thousands of img/s)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _cells(row: dict[str, Any]) -> list[str]:
    features = " ".join(f"{f['name']}:{f['channels']}/{f['stride']}" for f in row["features"])
    measured = [_rate(row["infer_img_s"]), _rate(row["train_img_s"])] if "infer_img_s" in row else []
    return [row["name"], f"{row['params_M']:.2f}", f"{row['MACs_G']:.3f}",
            f"{row['input']}x{row['input']}", str(row["num_classes"]), *measured, features]


_HEADER = ["model", "params (M)", "MACs (G)", "input", "classes", "features name:channels/stride"]
_MEASURED = ["infer img/s", "train img/s"]


def format_zoo_table(rows: Sequence[dict[str, Any]], fmt: str = "text") -> str:
    """Renders :func:`zoo_table` rows.

    Args:
        rows: Rows from :func:`zoo_table`; when they carry :func:`measure_throughput`'s rates (all or none
            of them), the columns "infer img/s" and "train img/s" come before the features.
        fmt: ``"text"`` (aligned columns), ``"markdown"`` (a GitHub table) or ``"json"``.

    Returns:
        The table, without a trailing newline.
    """
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown zoo format {fmt!r}; choose one of {list(FORMATS)}")
    measured = bool(rows) and "infer_img_s" in rows[0]
    header = [*_HEADER[:-1], *(_MEASURED if measured else []), _HEADER[-1]]
    numbers = len(header) - 2
    table = [header, *(_cells(r) for r in rows)]
    if fmt == "markdown":
        lines = ["| " + " | ".join(r) + " |" for r in table]
        lines.insert(1, "|" + "|".join(["---"] + ["---:"] * numbers + ["---"]) + "|")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    # Names and features left-aligned, numbers right-aligned.
    align = [str.ljust] + [str.rjust] * numbers + [str.ljust]
    return "\n".join("  ".join(a(c, w) for a, c, w in zip(align, r, widths)).rstrip() for r in table)


def plot_zoo(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """MACs (log x) against measured inference images/s (log y), one labelled point per architecture.

    Residual nets are circles, plain nets crosses; the ImageNet family (224x224 unless ``--image-size``)
    and the CIFAR family (32x32) have different colours, since their images/s are not comparable.

    Args:
        rows: Rows with :func:`measure_throughput`'s rates.
        path: The PNG to write (parent folders are created).

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 6.5))
    for cifar, colour in ((False, "tab:blue"), (True, "tab:orange")):
        for plain, marker in ((False, "o"), (True, "x")):
            group = [r for r in rows if is_cifar(r["name"]) == cifar and (r["name"] in PLAIN_ARCHS) == plain]
            if not group:
                continue
            sizes = sorted({r["input"] for r in group})
            label = (f"{'CIFAR' if cifar else 'ImageNet'} {'plain' if plain else 'residual'} "
                     f"({'/'.join(f'{s}x{s}' for s in sizes)}, {group[0]['num_classes']} classes)")
            # Hollow circles: a plain twin sits on its residual net's MACs, its cross stays visible inside.
            ax.scatter([r["MACs_G"] for r in group], [r["infer_img_s"] for r in group], marker=marker, s=45,
                       label=label, zorder=3,
                       **({"c": colour} if plain else {"facecolors": "none", "edgecolors": colour}))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("MACs per image (G, log)")
    ax.set_ylabel("measured inference images/s (log)")
    ax.set_title("Backbone zoo on this CPU: MACs vs measured inference throughput")
    ax.margins(x=0.1, y=0.1)  # room for the names of the outermost points
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _label_points(fig, ax, rows)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _label_points(fig: Any, ax: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Names next to the points, each at the first nearby spot where it overlaps no earlier name.

    Twins and near-twins (resnet20 / plain20, resnet152 / wide_resnet50_2) sit almost on one spot, so a
    fixed offset would print their names over each other.
    """
    offsets = [(5, 3, "left"), (5, -10, "left"), (-5, 3, "right"), (-5, -10, "right"), (5, 12, "left"),
               (5, -19, "left"), (-5, 12, "right"), (-5, -19, "right"), (5, 21, "left"), (5, -28, "left")]
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    # The markers are obstacles too (a square of ~4 points around each), so no name hides a point.
    half = 4 * fig.dpi / 72
    placed: list[Any] = [Bbox.from_extents(x - half, y - half, x + half, y + half) for x, y in
                         ax.transData.transform([(r["MACs_G"], r["infer_img_s"]) for r in rows])]
    for r in sorted(rows, key=lambda r: (r["MACs_G"], -r["infer_img_s"])):
        colour = "tab:orange" if is_cifar(r["name"]) else "tab:blue"
        for dx, dy, ha in offsets:
            text = ax.annotate(r["name"], (r["MACs_G"], r["infer_img_s"]), textcoords="offset points",
                               xytext=(dx, dy), ha=ha, fontsize=7, color=colour)
            box = text.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in placed):
                break
            if (dx, dy, ha) != offsets[-1]:
                text.remove()  # the last spot is kept even when crowded: a name is never dropped
        placed.append(box)


def zoo_main(argv: Sequence[str] | None = None) -> int:
    """``resvision zoo [--format text|markdown|json] [--measure ...] [NAME ...]``: prints the zoo table.

    Args:
        argv: Command-line arguments after ``zoo``.

    Returns:
        The exit status: 0, or 2 after printing ``error: <message>`` for a user error (an unknown name,
        a ``--batch`` / ``--windows`` / ``--threads`` / ``--image-size`` below 1, measuring options without
        ``--measure``).
    """
    parser = argparse.ArgumentParser(prog="resvision zoo", description=(
        "Parameters (with the classification fc), MACs (224x224 ImageNet / 32x32 CIFAR) and output "
        "features of every registered ResNet, measured with torch's FlopCounterMode; with --measure also "
        "inference and training images/s on this machine's CPU (medians of alternating windows)."))
    parser.add_argument("names", nargs="*", help="architectures to list (default: all)")
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    parser.add_argument("--measure", action="store_true",
                        help="also time inference and one SGD training step per window (slow for the big nets)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input side for every net, MACs included (default: 224 ImageNet, 32 CIFAR)")
    parser.add_argument("--batch", type=int, default=None, help="images per window with --measure (default 8)")
    parser.add_argument("--windows", type=int, default=None,
                        help="measured windows per variant with --measure, after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads with --measure (default 2)")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="with --measure: write MACs vs inference images/s to this PNG")
    args = parser.parse_args(argv)
    # cli.main dispatches here before its own UserError handling, so the zoo reports its own errors.
    try:
        if not args.measure:
            given = [f"--{k}" for k in ("batch", "windows", "threads", "plot") if getattr(args, k) is not None]
            if given:
                raise ConfigError(f"zoo: {', '.join(given)} given without --measure (measuring options)")
        if args.image_size is not None:
            _positive("--image-size", args.image_size)
        for option in ("batch", "windows", "threads"):
            if getattr(args, option) is not None:
                _positive(f"--{option}", getattr(args, option))
        rows = zoo_table(args.names, args.image_size)
        if args.measure:
            names = [r["name"] for r in rows]
            batch = 8 if args.batch is None else args.batch
            windows = 3 if args.windows is None else args.windows
            threads = 2 if args.threads is None else args.threads
            print(f"measuring {len(names)} nets: batch {batch}, {windows} window(s) after 1 warm-up, "
                  f"{threads} thread(s)", file=sys.stderr)
            rates = measure_throughput(names, args.image_size, batch, windows, threads=threads,
                                       log=lambda line: print(line, file=sys.stderr))
            rows = [{**r, **rates[r["name"]], "batch": batch, "threads": threads} for r in rows]
            if args.plot:
                plot_zoo(rows, args.plot)
        table = format_zoo_table(rows, args.format)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table)
    return 0
