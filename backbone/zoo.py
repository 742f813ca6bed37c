"""The model zoo table: parameters, MACs and declared features of every registered ResNet.

Numbers are measured, not copied: each network is built on the ``meta`` device (shapes only, no
memory, no init cost) and its classifier forward pass is counted with
``torch.utils.flop_counter.FlopCounterMode``. That counter reports FLOPs = 2 x multiply-accumulates
for convolutions and matmuls; we report MACs, the unit of He et al. 2016, Table 1 ("FLOPs" there are
multiply-adds). BN, ReLU, pooling and the residual sums are not counted, as in the paper.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resvision.backbone.base import Backbone, count_parameters
from resvision.backbone.registry import build_backbone
from resvision.backbone.resnet import CIFAR_ARCHS, PLAIN_ARCHS, TORCHVISION_ARCHS
from resvision.errors import ConfigError, UserError

__all__ = ["zoo_names", "zoo_row", "measure_classifier", "zoo_table", "format_zoo_table", "zoo_main"]

FORMATS = ("text", "markdown", "json")


def zoo_names() -> list[str]:
    """The registered fixed architectures (ImageNet, CIFAR, then the plain nets), i.e. everything but custom / timm."""
    return [*TORCHVISION_ARCHS, *CIFAR_ARCHS, *PLAIN_ARCHS]


def zoo_row(name: str) -> dict[str, Any]:
    """Measures one architecture as a classifier (backbone + global average pool + fc).

    ImageNet nets (and plain-18/34) are measured at 224x224 with a 1000-class fc, CIFAR nets (and plain-20 ...
    110) at 32x32 with 10 classes, the settings of the paper's tables.

    Args:
        name: A name from :func:`zoo_names`.

    Returns:
        ``{"name", "params", "params_M", "MACs", "MACs_G", "input", "num_classes", "features"}``, where
        ``features`` lists ``{"name", "channels", "stride"}`` of the backbone outputs.
    """
    if name not in zoo_names():
        close = difflib.get_close_matches(name, zoo_names(), n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown backbone {name!r} for the zoo{hint} (`resvision zoo` lists them all; "
                          "custom and timm: models are not in it)")
    size, num_classes = (32, 10) if PLAIN_ARCHS.get(name, name) in CIFAR_ARCHS else (224, 1000)
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
    was_training = backbone.training
    with counter, torch.no_grad():
        feature = backbone.eval()(image)[backbone.feature_specs[-1].name]
        fc(feature.mean((2, 3)))
    backbone.train(was_training)
    return count_parameters(backbone) + count_parameters(fc), counter.get_total_flops() // 2


def zoo_table(names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One :func:`zoo_row` per architecture (default: all of :func:`zoo_names`)."""
    return [zoo_row(n) for n in (names or zoo_names())]


def _cells(row: dict[str, Any]) -> list[str]:
    features = " ".join(f"{f['name']}:{f['channels']}/{f['stride']}" for f in row["features"])
    return [row["name"], f"{row['params_M']:.2f}", f"{row['MACs_G']:.3f}",
            f"{row['input']}x{row['input']}", str(row["num_classes"]), features]


_HEADER = ["model", "params (M)", "MACs (G)", "input", "classes", "features name:channels/stride"]


def format_zoo_table(rows: Sequence[dict[str, Any]], fmt: str = "text") -> str:
    """Renders :func:`zoo_table` rows.

    Args:
        rows: Rows from :func:`zoo_table`.
        fmt: ``"text"`` (aligned columns), ``"markdown"`` (a GitHub table) or ``"json"``.

    Returns:
        The table, without a trailing newline.
    """
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown zoo format {fmt!r}; choose one of {list(FORMATS)}")
    table = [_HEADER, *(_cells(r) for r in rows)]
    if fmt == "markdown":
        lines = ["| " + " | ".join(r) + " |" for r in table]
        lines.insert(1, "|" + "|".join(["---"] + ["---:"] * 4 + ["---"]) + "|")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in table) for i in range(len(_HEADER))]
    # Names and features left-aligned, numbers right-aligned.
    align = [str.ljust] + [str.rjust] * 4 + [str.ljust]
    return "\n".join("  ".join(a(c, w) for a, c, w in zip(align, r, widths)).rstrip() for r in table)


def zoo_main(argv: Sequence[str] | None = None) -> int:
    """``resvision zoo [--format text|markdown|json] [NAME ...]``: prints the zoo table.

    Args:
        argv: Command-line arguments after ``zoo``.

    Returns:
        The exit status: 0, or 2 after printing ``error: <message>`` for a user error (an unknown name).
    """
    parser = argparse.ArgumentParser(prog="resvision zoo", description=(
        "Parameters (with the classification fc), MACs (224x224 ImageNet / 32x32 CIFAR) and output "
        "features of every registered ResNet, measured with torch's FlopCounterMode."))
    parser.add_argument("names", nargs="*", help="architectures to list (default: all)")
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    args = parser.parse_args(argv)
    # cli.main dispatches here before its own UserError handling, so the zoo reports its own errors.
    try:
        table = format_zoo_table(zoo_table(args.names), args.format)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table)
    return 0
