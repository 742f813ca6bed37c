"""Heads of one's own on registry backbones: ``@rv.register_head(task, name)``, chosen in a config as ``model.head``.

A head builder takes the registry backbone the config describes (``model.backbone``), the class count and the
config's ``model.head_options``, and returns the whole ``nn.Module``, which keeps that backbone as its ``backbone``
attribute (the fine-tuning policy, Grad-CAM and the checkpoint's backbone record read it there)::

    @rv.register_head("classification", "mlp")
    class MlpHead(nn.Module):
        def __init__(self, backbone, num_classes, hidden=256):
            super().__init__()
            self.backbone = backbone
            channels = backbone.feature_specs[-1].channels
            self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

        def forward(self, x):
            return self.mlp(self.backbone(x)[self.backbone.feature_specs[-1].name].mean((2, 3)))

    run = rv.train("classification", ["model.head=mlp", "model.head_options={hidden: 64}"])

A checkpoint records the head's name and options in its config, so ``rv.load`` and the CLI's ``eval`` /
``predict`` / ``export`` rebuild it in any process where the head is registered: the user's script (registered
on import), or an installed package declaring it in the :data:`PLUGIN_GROUP` entry-point group as
``<task>.<head> = "package.module:Builder"``.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from typing import Any, Callable

from ..errors import ConfigError

#: entry-point group of heads from installed packages: ``classification.mlp = "my_package.heads:MlpHead"``
PLUGIN_GROUP = "resvision.heads"
#: tasks whose models take a registered head (the others' models are built from their own config keys)
HEAD_TASKS = ("classification",)

_HEADS: dict[tuple[str, str], Callable[..., Any]] = {}


def register_head(task: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``builder(backbone, num_classes, **head_options) -> nn.Module`` as ``model.head=name`` of
    ``task``."""
    if task not in HEAD_TASKS:
        raise ValueError(f"task {task!r} takes no registered heads (tasks that do: {', '.join(HEAD_TASKS)})")

    def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
        _HEADS[(task, name)] = builder
        return builder

    return decorate


def unregister_head(task: str, name: str) -> None:
    _HEADS.pop((task, name), None)


def _plugins(task: str) -> dict[str, importlib.metadata.EntryPoint]:
    found = importlib.metadata.entry_points(group=PLUGIN_GROUP)
    return {ep.name.split(".", 1)[1]: ep for ep in found if ep.name.startswith(task + ".")}


def list_heads(task: str) -> list[str]:
    return sorted({name for t, name in _HEADS if t == task} | set(_plugins(task)))


def get_head(task: str, name: str) -> Callable[..., Any]:
    """The builder registered as ``name`` for ``task`` (in this process, else an installed plugin's); a one-line
    ConfigError naming ``model.head`` otherwise."""
    if (task, name) in _HEADS:
        return _HEADS[(task, name)]
    plugin = _plugins(task).get(name)
    if plugin is None:
        known = list_heads(task)
        close = difflib.get_close_matches(name, known, n=1)
        raise ConfigError(f"model.head={name!r} is not a registered {task} head"
                          + (f" (did you mean {close[0]!r}?)" if close else "")
                          + f"; registered: {', '.join(known) or 'none'} (register one with rv.register_head, and "
                          "import the module that does so before loading the checkpoint)")
    try:
        builder = plugin.load()
    except Exception as err:  # noqa: BLE001 - a broken plugin is named, in one line
        raise ConfigError(f"model.head={name!r} from the installed plugin {plugin.value} does not import: "
                          f"{type(err).__name__}: {err}") from None
    _HEADS[(task, name)] = builder
    return builder


def build_head(task: str, name: str, backbone: Any, num_classes: int, options: dict[str, Any]) -> Any:
    """``get_head(task, name)(backbone, num_classes, **options)``, checked: the model must keep ``backbone`` as its
    ``backbone`` attribute."""
    builder = get_head(task, name)
    try:
        model = builder(backbone, num_classes, **options)
    except TypeError as err:
        raise ConfigError(f"model.head_options {options} do not fit head {name!r}: {err}") from None
    if getattr(model, "backbone", None) is not backbone:
        raise ConfigError(f"head {name!r} must keep the backbone it is given as its `backbone` attribute (the "
                          "fine-tuning policy, Grad-CAM and checkpoints read it there)")
    return model
