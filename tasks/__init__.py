"""Task registry: each task owns its model, loss, data, postprocessing, evaluator and report."""

from __future__ import annotations

import difflib
import importlib

from ..errors import ConfigError
from .base import DataInfo, Evaluator, Task, TaskOption

# Task name -> module that defines it (as ``TASK``). A fixed table, not a string from the config:
# configs never choose which code is imported. Adding a task = one line here.
_TASK_MODULES = {
    "classification": "resvision.tasks.classification",
    "detection": "resvision.tasks.detection",
    "segmentation": "resvision.tasks.segmentation",
    "face": "resvision.tasks.face",
}
_REGISTERED: dict[str, type[Task]] = {}


def register_task(task_cls: type[Task]) -> type[Task]:
    """Add a task class defined outside resvision (a plugin, a test) under ``task_cls.name``."""
    if not task_cls.name or task_cls.name in _TASK_MODULES:
        raise ValueError(f"task name {task_cls.name!r} is empty or taken")
    _REGISTERED[task_cls.name] = task_cls
    return task_cls


def unregister_task(name: str) -> None:
    _REGISTERED.pop(name, None)


def list_tasks() -> list[str]:
    return sorted([*_TASK_MODULES, *_REGISTERED])


def get_task_class(name: str) -> type[Task]:
    """Return the Task subclass registered as ``name`` (ConfigError with close matches otherwise)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _TASK_MODULES:
        close = difflib.get_close_matches(str(name), list_tasks(), n=2)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown task {name!r}{hint}; tasks: {', '.join(list_tasks())}")
    return importlib.import_module(_TASK_MODULES[name]).TASK


def build_task(cfg) -> Task:
    """Instantiate the task named by ``cfg.task``."""
    return get_task_class(cfg.task)(cfg)


__all__ = ["DataInfo", "Evaluator", "Task", "TaskOption", "build_task", "get_task_class", "list_tasks",
           "register_task", "unregister_task"]
