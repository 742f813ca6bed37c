"""Task registry: each task owns its model, loss, data, postprocessing, evaluator and report. The config loader
that checks a config against its task's schema (`load_config`, `config_from_dict`) looks the task up here."""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from ..config import Config
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


log = logging.getLogger("resvision")

#: Installed packages add tasks under this entry-point group (``[project.entry-points."resvision.tasks"]``,
#: ``my_task = "my_package.module:MyTask"``): what the environment installed, never a name read from a config.
PLUGIN_GROUP = "resvision.tasks"


def _plugins() -> dict[str, importlib.metadata.EntryPoint]:
    found = importlib.metadata.entry_points(group=PLUGIN_GROUP)
    for ep in found:
        if ep.name in _TASK_MODULES:
            log.warning("the plugin task %s = %s is ignored: %r is a built-in task", ep.name, ep.value, ep.name)
    return {ep.name: ep for ep in found if ep.name not in _TASK_MODULES}


def list_tasks() -> list[str]:
    return sorted({*_TASK_MODULES, *_REGISTERED, *_plugins()})


def get_task_class(name: str) -> type[Task]:
    """Return the Task subclass registered as ``name`` (ConfigError with close matches otherwise): a built-in task,
    one given to :func:`register_task`, or an installed plugin's (entry-point group :data:`PLUGIN_GROUP`)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if "+" in str(name):
        from .joint.task import joint_task_class

        return joint_task_class(name, get_task_class)
    if name in _TASK_MODULES:
        return importlib.import_module(_TASK_MODULES[name]).TASK
    plugin = _plugins().get(name)
    if plugin is None:
        close = difflib.get_close_matches(str(name), list_tasks(), n=2)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown task {name!r}{hint}; tasks: {', '.join(list_tasks())}")
    from .base import Task

    try:
        task_cls = plugin.load()
    except Exception as err:  # noqa: BLE001 - a broken plugin is named, in one line
        raise ConfigError(f"task {name!r} from the installed plugin {plugin.value} does not import: "
                          f"{type(err).__name__}: {err}") from None
    if not (isinstance(task_cls, type) and issubclass(task_cls, Task) and task_cls.name == name):
        raise ConfigError(f"the plugin entry point {name} = {plugin.value} is not a Task subclass named {name!r}")
    _REGISTERED[name] = task_cls
    return task_cls


def build_task(cfg) -> Task:
    """Instantiate the task named by ``cfg.task``."""
    return get_task_class(cfg.task)(cfg)


def load_config(path_or_task: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a config from a YAML file, a packaged name or a task name, then apply overrides.

    ``config.py`` reads and checks the file and imports no task; the task whose ``model`` / ``data`` sections
    (and default config) it checks against comes from this table (:func:`get_task_class`).

    Args:
        path_or_task: a YAML path; a packaged config such as ``"classification/classifier_resnet20_digits"``;
            or a task name (``"classification"``) for that task's default config on built-in data.
        overrides: ``"dotted.key=value"`` strings; values are parsed as YAML scalars/lists.

    Returns:
        The checked :class:`~resvision.config.Config`.

    Raises:
        ConfigError: missing file, a second ``base:`` level, an unknown task or key, or a wrong type.
    """
    from ..config import read_config

    return read_config(path_or_task, overrides, get_task_class)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Check a plain nested dict (already merged) against the schema of its task (``raw["task"]``)."""
    from ..config import check_config

    return check_config(raw, get_task_class)


def create_model(task: str, backbone: str | dict[str, Any] = "resnet50", num_classes: int | None = None,
                 pretrained_backbone: str | None = None, **model_options: Any) -> nn.Module:
    """A task's model: a registry backbone plus the task's head(s), the module the CLI builds for the same config
    (the schema's defaults: torchvision's for detection, smp's for the decoders), untrained except for
    ``pretrained_backbone``.

    >>> model = rv.create_model("segmentation", backbone="resnet50", num_classes=21, decoder="deeplabv3plus")
    >>> rv.create_model("detection", backbone="timm:resnet18", num_classes=3, min_size=512)

    Args:
        task: a task name (``rv.list_tasks()``).
        backbone: a registry name (``resnet18``, ``custom``, ``timm:<model>``, ...) or the whole ``model.backbone``
            config section as a dict (e.g. ``{"name": "resnet50", "out_features": ["c3", "c4", "c5"]}``).
        num_classes: the head's classes (segmentation: background included; face: training identities).
        pretrained_backbone: ``torchvision:<WEIGHTS>``, ``timm:<tag>`` or a local weights file.
        model_options: any other key of the task's ``model`` section (``resvision config --task T`` lists them).

    Raises:
        ConfigError: an unknown option or a value of the wrong type, named as the config loader names it.
    """
    section = dict(backbone) if isinstance(backbone, dict) else {"name": backbone}
    if pretrained_backbone is not None:
        section["pretrained"] = pretrained_backbone
    model = {**model_options, "backbone": section}
    if num_classes is not None:
        model["num_classes"] = num_classes
    cfg = config_from_dict({"task": task, "model": model})
    if cfg.model.num_classes is None:
        raise ConfigError(f"create_model({task!r}): give num_classes (the data sets it when training from a config)")
    built = build_task(cfg)
    return built.build_model(built.data_from_meta({"classes": [f"class_{i}" for i in range(cfg.model.num_classes)]}))


__all__ = ["DataInfo", "Evaluator", "Task", "TaskOption", "build_task", "config_from_dict", "create_model",
           "get_task_class", "list_tasks", "load_config", "register_task", "unregister_task"]


def __getattr__(name: str) -> Any:
    """The contract's classes, imported on first use: the task table above is read without torch (``--help``)."""
    if name == "base":
        return importlib.import_module(".base", __name__)
    if name in ("DataInfo", "Evaluator", "Task", "TaskOption"):
        return getattr(importlib.import_module(".base", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
