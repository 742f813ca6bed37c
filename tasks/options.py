"""Options of ``resvision predict`` (``TaskOption``) and the built-in tasks' own, kept free of torch: the command line
builds ``predict``'s flags from them, and answers ``predict --help`` or a mistyped flag, before any task or torch is
imported. Each built-in task's ``predict_options`` is its entry in :data:`BUILTIN_PREDICT_OPTIONS`; a plugin task
declares its own on its class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import UserError


@dataclass(frozen=True)
class TaskOption:
    """A ``resvision predict`` option a task accepts (``--score-thresh 0.5`` -> ``score_thresh=0.5``)."""

    name: str  # keyword of Task.predict, e.g. "score_thresh"
    type: Callable[[str], Any]
    help: str
    minimum: float | None = None  # checked before any checkpoint is read
    maximum: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        low = self.minimum is not None and value < self.minimum
        high = self.maximum is not None and value > self.maximum
        if low or high:
            bounds = f"[{'-inf' if self.minimum is None else self.minimum}, {'inf' if self.maximum is None else self.maximum}]"
            raise UserError(f"{self.flag} must lie in {bounds}, got {value}")


BUILTIN_PREDICT_OPTIONS: dict[str, tuple[TaskOption, ...]] = {
    "classification": (TaskOption("topk", int, "classification: classes per image (default 5)", minimum=1),),
    "detection": (TaskOption("score_thresh", float, "detection: minimum score of a listed / drawn box (default 0.5)",
                             minimum=0.0, maximum=1.0),),
    "segmentation": (),
    "face": (TaskOption("threshold", float, "face: cosine similarity above which two faces are the same person "
                        "(default: the checkpoint's verif_threshold)", minimum=-1, maximum=1),
             TaskOption("gallery", str, "face: identity folders of known people (<dir>/<person>/<image>); each image "
                        "is identified as the most similar person, or unknown")),
}
