"""Checkpoints: written atomically, read with ``weights_only=True``, checked against the run.

A checkpoint is a plain dict of tensors and primitives (no pickled objects), so loading it can
never execute code:
``{"model", "ema"?, "optimizer", "scheduler", "scaler", "epoch", "global_step", "best", "task",
"backbone", "config", "meta"}``. ``epoch`` is the number of completed epochs.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import CheckpointError, UserError


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` via a temp file + ``os.replace``: a kill leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def copy_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Atomic copy (best.pt from last.pt without serialising twice)."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU; CheckpointError naming the file when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a resvision checkpoint (no 'model' entry)")
    return state


def check_compatible(state: dict[str, Any], path: str | Path, task: str, backbone: str) -> None:
    """Refuse a checkpoint of another task or backbone before touching any weights."""
    if state.get("task", task) != task:
        raise CheckpointError(f"{path} is a {state['task']!r} checkpoint, not {task!r}")
    if state.get("backbone", backbone) != backbone:
        raise CheckpointError(
            f"{path} was trained with backbone {state['backbone']!r} but the config says {backbone!r} "
            f"(set model.backbone.name={state['backbone']})"
        )


def checkpoint_config(state: dict[str, Any], path: str | Path, overrides: Sequence[str] = (),
                      config_file: str | Path | None = None, *, task_class: Callable[[str], Any]):
    """The config to rebuild a checkpoint's model: its own (or ``config_file``), with ``overrides``, checked against
    the schema of its task, ``task_class(name)`` (the caller's task table: ``resvision.tasks.get_task_class``).

    Every ``pretrained`` initialisation key of the model section is cleared: the checkpoint holds
    every weight, so evaluating or predicting never looks for the original pretrained files (a run
    started from ``torchvision:`` weights evaluates offline). The checkpoint must belong to the
    config's task and backbone.
    """
    from ..config import apply_overrides, check_config, read_config

    if config_file is not None:
        cfg = read_config(config_file, list(overrides), task_class)
    elif isinstance(state.get("config"), dict):
        cfg = check_config(apply_overrides(state["config"], list(overrides)), task_class)
    else:
        raise CheckpointError(f"{path} holds no config: give --config FILE")
    clear_pretrained(cfg.model)
    for entry in (cfg.tasks or {}).values():  # a joint run's heads: their model sections are plain dicts
        if isinstance(entry, dict) and isinstance(entry.get("model"), dict):
            entry["model"] = _without_pretrained(entry["model"])
    check_compatible(state, path, cfg.task, cfg.model.backbone.name)
    return cfg


def clear_pretrained(section: Any) -> None:
    """Set every ``pretrained`` / ``pretrained_sha256`` field of nested config dataclasses to None."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if f.name in ("pretrained", "pretrained_sha256"):
            setattr(section, f.name, None)
        elif dataclasses.is_dataclass(value):
            clear_pretrained(value)


def _without_pretrained(section: dict[str, Any]) -> dict[str, Any]:
    return {k: None if k in ("pretrained", "pretrained_sha256") else _without_pretrained(v) if isinstance(v, dict)
            else v for k, v in section.items()}


def load_model_state(model: nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """Strict load of a whole model (``backbone.weights.load_strict`` with CheckpointError)."""
    from ..backbone.weights import load_strict

    load_strict(model, weights, str(path), CheckpointError)


def holds_results(folder: str | Path) -> bool:
    """Whether ``folder`` holds a training run (``checkpoints/``) or a report: results nothing may replace."""
    return (Path(folder) / "checkpoints").is_dir() or (Path(folder) / "report.json").exists()


def results_dir(source: str | Path, kind: str, output: str | Path | None = None) -> Path:
    """Where ``eval`` / ``predict`` (CLI and library alike) write the results of ``source`` (a checkpoint, an
    exported file or a predictions file): ``output`` when given, which must hold no run and no report; else a new
    ``<run>/<kind>/<timestamp>`` folder for ``<run>/checkpoints/x.pt`` (``<folder>/<kind>/<timestamp>`` for a
    file elsewhere). No earlier result and no training run's own files are ever replaced."""
    if output:
        out = Path(output)
        if holds_results(out):
            raise UserError(f"output folder {out} already holds a run or a report; choose another folder")
        return out
    folder = Path(source).resolve().parent
    parent = (folder.parent if folder.name == "checkpoints" else folder) / kind
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = parent / stamp
    for i in range(2, 1000):
        if not out.exists():
            break
        out = parent / f"{stamp}-{i}"
    return out
