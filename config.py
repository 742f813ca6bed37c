"""Typed configuration: YAML with one ``base:`` level, dotted overrides, checked against dataclasses.

A config is plain data. The loader reads YAML, merges it over its ``base:``, applies command-line
overrides such as ``model.backbone.name=resnet101``, then converts the nested dict into the
dataclasses below (plus the task's own ``model`` and ``data`` sections), checking every key and
type. Unknown keys fail with the closest valid key; nothing is ever evaluated or imported by name.

Values are also checked against bounds declared in each field's metadata, so that an impossible
number fails here, naming its key, instead of in a library assert deep inside training:
``field(default=10, metadata={"ge": 1})`` (also ``gt``, ``le``, ``lt``; on a list every item is
checked), or ``metadata={"pattern": <regex>, "expected": <words for the message>}`` for strings.
Task ``ModelConfig`` / ``DataConfig`` dataclasses use the same metadata. A dataclass with a
``validate()`` method (e.g. the backbone's ``ResNetConfig``) is validated after conversion.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import operator
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .backbone.resnet import ResNetConfig
from .errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
log = logging.getLogger("resvision")


# ---------------------------------------------------------------------------------------------
# Sections shared by every task
# ---------------------------------------------------------------------------------------------
@dataclass
class BackboneConfig:
    """Which registry backbone to build (see ``resvision.build_backbone``)."""

    name: str = "resnet18"
    pretrained: str | None = None  # torchvision:<WEIGHTS>, timm:<tag>, or a local .pth/.safetensors
    pretrained_sha256: str | None = None
    out_features: list[str] | None = None  # None: every stage
    norm: Literal["bn", "frozen_bn"] = "bn"
    # 8 or 16: the deepest stages dilate instead of striding (DeepLab's output stride); None: the network's own
    output_stride: Literal[8, 16] | None = None
    # The architecture of `name: custom`, unused by every other name (so swapping `name` never trips over it).
    custom: ResNetConfig = field(default_factory=ResNetConfig)
    args: dict[str, Any] = field(default_factory=dict)  # extra builder arguments (e.g. timm model kwargs)


@dataclass
class TrainConfig:
    """The loop: length, batch, precision and bookkeeping."""

    epochs: int = field(default=10, metadata={"ge": 1})
    # Stop after this many optimizer steps (schedules follow it).
    max_iters: int | None = field(default=None, metadata={"ge": 1})
    # Per process; the global batch is batch_size x world size x grad_accum.
    batch_size: int = field(default=32, metadata={"ge": 1})
    grad_accum: int = field(default=1, metadata={"ge": 1})
    clip_grad: float | None = field(default=None, metadata={"gt": 0})  # max global L2 norm
    amp: Literal["auto", "off", "fp16", "bf16"] = "auto"  # auto: bf16/fp16 on CUDA, off on CPU
    ema: bool = False
    ema_decay: float = field(default=0.9998, metadata={"gt": 0, "lt": 1})
    channels_last: bool = False
    compile: bool = False
    device: str = field(default="auto", metadata={"pattern": r"auto|cpu|cuda|cuda:\d+|mps",
                                                  "expected": "auto, cpu, cuda, cuda:N or mps"})
    seed: int = 0
    deterministic: bool = False
    num_workers: int = field(default=2, metadata={"ge": 0})
    eval_every: int = field(default=1, metadata={"ge": 1})  # epochs
    log_every: int = field(default=20, metadata={"ge": 1})  # optimizer steps between metrics.jsonl rows
    checkpoint_every: int = field(default=1, metadata={"ge": 1})  # epochs between last.pt writes
    # Evaluations without improvement.
    early_stop_patience: int | None = field(default=None, metadata={"ge": 1})
    # per-stage gradient norms and update / weight ratios every N optimizer steps (engine/gradient_flow.py)
    monitor_gradients: bool = False
    gradient_monitor_every: int = field(default=10, metadata={"ge": 1})
    monitor: str | None = None  # metric for best.pt / early stopping; None: the task's main metric
    monitor_mode: Literal["max", "min"] | None = None
    progress: bool = True  # tqdm bar


@dataclass
class OptimConfig:
    """Optimizer, built by timm's ``create_optimizer_v2`` (so every timm name works)."""

    name: str = "sgd"
    lr: float = field(default=0.1, metadata={"ge": 0})  # 0 is allowed: it holds the weights (BN statistics still move)
    weight_decay: float = field(default=1e-4, metadata={"ge": 0})
    momentum: float = field(default=0.9, metadata={"ge": 0})
    no_decay_norm_bias: bool = True  # no weight decay on norm layers and biases


@dataclass
class SchedConfig:
    """Learning-rate schedule, built by timm's ``create_scheduler_v2`` and stepped every update."""

    name: Literal["cosine", "step", "multistep", "poly", "constant"] = "cosine"
    warmup_epochs: float = field(default=0.0, metadata={"ge": 0})
    warmup_lr: float = field(default=1e-5, metadata={"ge": 0})
    min_lr: float = field(default=0.0, metadata={"ge": 0})
    decay_epochs: float = field(default=30.0, metadata={"gt": 0})  # step
    decay_milestones: list[int] = field(default_factory=lambda: [30, 60, 90], metadata={"ge": 0})  # multistep
    # step / multistep factor; the power for poly.
    decay_rate: float = field(default=0.1, metadata={"gt": 0})


@dataclass
class FinetuneConfig:
    """The fine-tuning policy, identical for every task."""

    strategy: Literal["full", "linear_probe", "partial"] = "full"
    # partial: stem (0) and stages 1..k frozen; -1: none.
    frozen_stages: int = field(default=-1, metadata={"ge": -1})
    norm_eval: bool = False  # keep every backbone BatchNorm in eval mode (frozen statistics)
    backbone_lr_mult: float = field(default=1.0, metadata={"ge": 0})
    # lr x decay^(depth from the head), per backbone stage.
    layer_decay: float | None = field(default=None, metadata={"gt": 0, "le": 1})
    unfreeze_at: dict[int, list[int]] = field(default_factory=dict)  # epoch -> stage indices


@dataclass
class Config:
    """A whole run. ``model`` and ``data`` are the task's own dataclasses."""

    task: str
    model: Any = None
    data: Any = None
    name: str = "default"
    output_dir: str = "runs"  # the run directory is <output_dir>/<task>/<name> ...
    output: str | None = None  # ... unless this exact run directory is given (--output)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output) if self.output else Path(self.output_dir) / self.task / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def load_config(path_or_task: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a config from a YAML file, a packaged name or a task name, then apply overrides.

    Args:
        path_or_task: a YAML path; a packaged config such as ``"classification/classifier_resnet20_digits"``;
            or a task name (``"classification"``) for that task's default config on built-in data.
        overrides: ``"dotted.key=value"`` strings; values are parsed as YAML scalars/lists.

    Returns:
        The checked :class:`Config`.

    Raises:
        ConfigError: missing file, a second ``base:`` level, an unknown key or a wrong type.
    """
    raw = _read_with_base(_resolve_path(path_or_task))
    return config_from_dict(_named_after_backbone(raw, apply_overrides(raw, overrides), overrides))


def _named_after_backbone(raw: dict[str, Any], merged: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A run whose backbone is swapped by an override (and whose ``name`` is not) is named after what it is: the
    config's backbone in its name is replaced (``resnet20_digits`` -> ``resnet50_digits``), else the new one is
    appended (``fpn_smallresnet_shapes_resnet50``)."""
    keys = {o.split("=", 1)[0].strip() for o in overrides}
    old, new, name = _backbone_name(raw), _backbone_name(merged), merged.get("name")
    if "model.backbone.name" not in keys or "name" in keys or not isinstance(name, str) or not isinstance(new, str) \
            or new == old:
        return merged
    token = re.sub(r"[^A-Za-z0-9.-]+", "-", new)  # timm:resnet18 -> timm-resnet18
    parts = name.split("_")
    parts = [token if p == old else p for p in parts] if old in parts else [*parts, token]
    return {**merged, "name": "_".join(parts)}


def _backbone_name(raw: dict[str, Any]) -> Any:
    """``model.backbone.name`` of an unchecked config dict (None where a level is missing or not a mapping)."""
    model = raw.get("model")
    backbone = model.get("backbone") if isinstance(model, dict) else None
    return backbone.get("name") if isinstance(backbone, dict) else None


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Check a plain nested dict (already merged) against the schema of its task."""
    from .tasks import get_task_class  # late import: tasks import this module

    raw = dict(raw)
    task = raw.get("task")
    if not isinstance(task, str):
        raise ConfigError("config has no 'task' key (e.g. task: classification)")
    task_cls = get_task_class(task)
    raw.setdefault("model", {})
    raw.setdefault("data", {})
    return _convert(Config, raw, "", {"model": task_cls.ModelConfig, "data": task_cls.DataConfig})


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML; :func:`load_config` reads it back to an equal config."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def packaged_configs() -> list[str]:
    """Names of the YAML configs shipped with the package, e.g. ``classification/classifier_resnet20_digits``."""
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.glob("*/*.yaml"))


def _resolve_path(path_or_task: str | Path) -> Path:
    path = Path(path_or_task)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    name = str(path_or_task)
    if "/" not in name:
        from .tasks import get_task_class

        name = get_task_class(name).default_config
    packaged = CONFIG_DIR / f"{name}.yaml"
    if packaged.is_file():
        return packaged
    hint = difflib.get_close_matches(name, packaged_configs(), n=3)
    raise ConfigError(f"no config file or packaged config named {name!r}" + (f" (close: {', '.join(hint)})" if hint else ""))


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema booleans: only true / false (any case) are bools.

    YAML 1.1 also reads on / off / yes / no as bools, which made ``train.amp=off`` the bool False and
    a string key such as ``name=yes`` unusable. Bool keys still accept those words (see ``_check_scalar``).
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506  _Loader is a SafeLoader


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = _load_yaml(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _read_with_base(path: Path) -> dict[str, Any]:
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
    if not base_path.is_file():
        raise ConfigError(f"{path}: base config not found: {base_path}")
    base_data = _read_yaml(base_path)
    if "base" in base_data:
        # One level keeps every value's origin one file away (MMEngine-style chains are hard to read).
        raise ConfigError(f"{path}: its base {base_path} has a base of its own; only one base level is allowed")
    return _merge(base_data, data)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Set each ``"dotted.key=value"`` in a copy of ``raw`` (values parsed as YAML)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        _apply_override(raw, item)
    return raw


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    try:
        value = _load_yaml(text) if text != "" else ""
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------
# Type checking: dict -> dataclass
# ---------------------------------------------------------------------------------------------
def _convert(cls: type, data: Any, path: str, section_types: dict[str, type] | None = None) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{path}{key}"
        if key not in fields:
            renamed = getattr(cls, "renamed_keys", {}).get(key)
            if renamed and renamed not in data:
                # Read under the new name, so configs stored in older runs and checkpoints still load.
                log.warning("config key '%s' is now '%s%s'; read as such", full, path, renamed)
                key, full = renamed, f"{path}{renamed}"
            elif renamed:
                raise ConfigError(f"config has both '{full}' and its new name '{path}{renamed}'")
            else:
                close = difflib.get_close_matches(str(key), list(fields), n=1)
                hint = f" (did you mean '{path}{close[0]}'?)" if close else f" (valid: {', '.join(fields)})"
                raise ConfigError(f"unknown config key '{full}'{hint}")
        typ = (section_types or {}).get(key, hints[key])
        kwargs[key] = _check(typ, value, full)
        _check_metadata(kwargs[key], fields[key].metadata, full)
    missing = [name for name, f in fields.items() if name not in kwargs and _required(f)]
    if missing:
        raise ConfigError(f"config is missing required key '{path}{missing[0]}'")
    for key, typ in (section_types or {}).items():
        if key not in kwargs:
            kwargs[key] = _convert(typ, {}, f"{path}{key}.")
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        try:
            obj.validate()
        except ConfigError as err:  # its messages start with the field name: prefix the section
            raise ConfigError(f"{path}{err}") from None
    return obj


_BOUNDS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le), "lt": ("<", operator.lt)}


def _check_metadata(value: Any, metadata: typing.Mapping[str, Any], path: str) -> None:
    """Checks ``value`` against the field's declared bounds / pattern (None always passes)."""
    if value is None or not metadata:
        return
    if isinstance(value, list):
        if metadata.get("range") and (len(value) != 2 or not value[0] <= value[1]):
            raise ConfigError(f"{path}: must be [low, high] with low <= high, got {value}")
        for i, item in enumerate(value):
            _check_metadata(item, metadata, f"{path}[{i}]")
        return
    for key, (sign, ok) in _BOUNDS.items():
        # "not ok" rather than the opposite comparison, so that NaN fails every bound.
        if key in metadata and not ok(value, metadata[key]):
            raise ConfigError(f"{path}: must be {sign} {metadata[key]}, got {value!r}")
    if "pattern" in metadata and not re.fullmatch(metadata["pattern"], value):
        raise ConfigError(f"{path}: must be {metadata['expected']}, got {value!r}")


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check(typ: Any, value: Any, path: str) -> Any:
    """Return ``value`` converted to ``typ`` or raise a ConfigError naming ``path``."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if typ is Any:
        return value
    if dataclasses.is_dataclass(typ):
        return _convert(typ, value if value is not None else {}, f"{path}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _check(option, value, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} does not fit {_type_name(typ)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_check(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        key_t, val_t = args if args else (Any, Any)
        return {_check(key_t, k, f"{path}.{k}"): _check(val_t, v, f"{path}.{k}") for k, v in value.items()}
    return _check_scalar(typ, value, path)


def _check_scalar(typ: type, value: Any, path: str) -> Any:
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" as a string; accept it as the float it obviously is
            return float(value)
        except ValueError:
            pass
    if typ is int and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)  # dict keys from YAML/CLI, e.g. unfreeze_at: {"3": [4]}
    if typ is bool and isinstance(value, str) and value.lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.lower()]  # the YAML 1.1 words, where the schema asks for a bool
    if typ in (int, str, bool) and isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
        return value
    if typ is str and isinstance(value, bool):
        return str(value).lower()  # name=true: YAML's bool, written back as the word it was
    if typ is str and isinstance(value, (int, float)):
        return str(value)  # e.g. name=2024 on the command line
    raise ConfigError(f"{path}: expected {_type_name(typ)}, got {value!r}")


def _type_name(typ: Any) -> str:
    return getattr(typ, "__name__", str(typ).replace("typing.", ""))
