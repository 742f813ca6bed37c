"""Training and evaluation in one call each: ``rv.train`` and ``rv.evaluate``, what ``resvision train`` / ``eval`` run.

>>> import resvision as rv
>>> run = rv.train("classification", overrides=["model.backbone.name=resnet18", "train.epochs=3"])
>>> run.run_dir, run.metrics["accuracy"]
>>> evaluation = rv.evaluate(run.run_dir / "checkpoints" / "best.pt")    # into <run>/eval/<timestamp>/
>>> evaluation["accuracy"] == evaluation.metrics["accuracy"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence


__all__ = ["RunResult", "evaluate", "train"]


@dataclass
class RunResult(Mapping[str, Any]):
    """Where a run or an evaluation wrote (``report.json``, ``plots/``, ...) and its metrics; reads as the metrics
    (``result["mIoU"]``)."""

    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    @property
    def report(self) -> Path:
        return self.run_dir / "report.json"


def train(config: Any, overrides: Sequence[str] = (), *, output: str | Path | None = None,
          resume: str | Path | None = None, callbacks: Sequence[Any] = ()) -> RunResult:
    """Train a model as ``resvision train`` does and return its run folder and final metrics.

    Args:
        config: a task name (its default config on built-in data, e.g. ``"detection"``), a packaged config
            (``"segmentation/fpn_smallresnet_shapes"``), a YAML file, or a :class:`~resvision.config.Config`.
        overrides: ``"dotted.key=value"`` strings, as on the command line.
        output: the run folder (default ``runs/<task>/<name>``, moving on to ``<name>-2`` when taken).
        resume: a ``last.pt`` to continue, or ``"auto"`` (the run folder's own).
        callbacks: extra :class:`~resvision.engine.Callback` objects.
    """
    from .config import Config, apply_overrides
    from .engine import Trainer
    from .tasks import build_task, config_from_dict, load_config

    if isinstance(config, Config):
        cfg = config_from_dict(apply_overrides(config.to_dict(), list(overrides)))
    else:
        cfg = load_config(config, list(overrides))
    if output is not None:
        cfg.output = str(output)
    trainer = Trainer(build_task(cfg), callbacks=list(callbacks), resume=resume)
    metrics = trainer.fit()  # logs the run folder as it starts
    return RunResult(Path(trainer.run_dir), dict(metrics))


def evaluate(checkpoint: str | Path, overrides: Sequence[str] = (), *, output: str | Path | None = None,
             engine: str | None = None, config: str | Path | None = None, allow_unverified: bool = False,
             task: str | None = None) -> RunResult:
    """Evaluate a checkpoint (``.pt``) or an exported file (``.onnx``) on its config's validation split, as
    ``resvision eval`` does, and return the report folder and the metrics.

    The report goes to ``output`` (a folder holding no run and no report) or a new ``<run>/eval/<timestamp>/``: a
    training run's own ``report.json`` is never replaced (``engine.checkpoint.results_dir``, the CLI's rule too).

    Args:
        checkpoint: the ``.pt`` or ``.onnx`` file.
        overrides: ``"dotted.key=value"`` strings (e.g. ``data.root=...`` for other validation data).
        engine: ``"torch"`` or ``"onnxruntime"`` (a ``.pt`` is exported first, with its parity check).
        config: a YAML config to use instead of the checkpoint's own.
        allow_unverified: evaluate an ``.onnx`` file whose parity check failed at export.
        task: the task the file must belong to.
    """
    from .engine import Trainer
    from .engine.checkpoint import results_dir
    from .predictor import onnx_module, read_source, resolve_engine
    from .tasks import build_task

    engine = resolve_engine(checkpoint, engine)
    state, cfg = read_source(checkpoint, overrides, config, allow_unverified, task)
    out = results_dir(checkpoint, "eval", output)
    cfg.output = str(out)
    built = build_task(cfg)
    runtime = onnx_module(built, checkpoint, out, overrides, config) if engine == "onnxruntime" else None
    metrics = Trainer(built).evaluate(checkpoint, state, runtime=runtime)  # logs the report folder
    return RunResult(out, dict(metrics))
