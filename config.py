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
from collections.abc import Callable, Sequence
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
def setting(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING,
            **checks: Any) -> Any:
    """A config field with its one-line help (shown by ``resvision config`` and ``--print-config``) and its checks
    (``ge`` / ``gt`` / ``le`` / ``lt``, ``range=True`` for ``[low, high]``, ``pattern`` + ``expected``)."""
    if not help:
        raise TypeError("every config setting needs its one-line help")
    return field(default=default, default_factory=factory, metadata={"help": help, **checks})


@dataclass
class BackboneConfig:
    """Which registry backbone to build (see ``resvision.build_backbone``)."""

    name: str = setting("resnet18", "registry name (resnet18..152, resnext*, wide_resnet*, resnet20..110, custom; "
                                    "`resvision zoo`) or timm:<model>")
    pretrained: str | None = setting(None, "weights: torchvision:<WEIGHTS>, timm:<tag>, or a local .pth / "
                                           ".safetensors file; null: random init")
    pretrained_sha256: str | None = setting(None, "expected SHA-256 of the pretrained file (checked before loading)")
    out_features: list[str] | None = setting(None, "backbone features the head reads (e.g. [c3, c4, c5]); null: "
                                                   "every stage")
    norm: Literal["bn", "frozen_bn"] = setting("bn", "bn: trainable BatchNorm; frozen_bn: fixed statistics and "
                                                     "affine (detection's usual choice)")
    output_stride: Literal[8, 16] | None = setting(None, "8 or 16: the deepest stages dilate instead of striding "
                                                         "(DeepLab); null: the network's own stride")
    custom: ResNetConfig = setting(factory=ResNetConfig, help="the architecture of name: custom (ignored by every "
                                                              "other name)")
    args: dict[str, Any] = setting(factory=dict, help="extra builder arguments, e.g. timm model kwargs")


@dataclass
class TrainConfig:
    """The loop: length, batch, precision and bookkeeping."""

    epochs: int = setting(10, "passes over the training data", ge=1)
    max_iters: int | None = setting(None, "stop after this many optimizer steps (the schedule follows it); null: "
                                          "epochs decide", ge=1)
    batch_size: int = setting(32, "images per step per process (global batch = batch_size x processes x "
                                  "grad_accum)", ge=1)
    grad_accum: int = setting(1, "batches whose gradients add up before one optimizer step", ge=1)
    clip_grad: float | None = setting(None, "clip the global gradient L2 norm to this; null: no clipping", gt=0)
    amp: Literal["auto", "off", "fp16", "bf16"] = setting("auto", "mixed precision; auto: bf16/fp16 on CUDA, off "
                                                                  "on CPU")
    ema: bool = setting(False, "keep an exponential moving average of the weights (timm ModelEmaV3); evaluation "
                               "and best.pt use it")
    ema_decay: float = setting(0.9998, "EMA decay per step", gt=0, lt=1)
    channels_last: bool = setting(False, "channels_last memory format for model and images")
    compile: bool = setting(False, "torch.compile the model")
    device: str = setting("auto", "auto (CUDA if present), cpu, cuda, cuda:N or mps",
                          pattern=r"auto|cpu|cuda|cuda:\d+|mps", expected="auto, cpu, cuda, cuda:N or mps")
    seed: int = setting(0, "seed of weights, data order and augmentation")
    deterministic: bool = setting(False, "deterministic kernels (slower; bit-identical reruns on one machine)")
    num_workers: int = setting(2, "DataLoader worker processes", ge=0)
    eval_every: int = setting(1, "epochs between evaluations (the last epoch is always evaluated)", ge=1)
    log_every: int = setting(20, "optimizer steps between metrics.jsonl rows", ge=1)
    checkpoint_every: int = setting(1, "epochs between last.pt writes", ge=1)
    early_stop_patience: int | None = setting(None, "stop after this many evaluations without improvement; null: "
                                                    "never", ge=1)
    monitor_gradients: bool = setting(False, "log per-stage gradient norms and update / weight ratios "
                                             "(gradient_flow.jsonl)")
    gradient_monitor_every: int = setting(10, "optimizer steps between gradient-flow rows", ge=1)
    monitor: str | None = setting(None, "metric that picks best.pt and drives early stopping, or a weighted sum "
                                        "(0.5*detection/bbox_AP50 + 0.5*segmentation/mIoU); null: the task's main "
                                        "metric")
    monitor_mode: Literal["max", "min"] | None = setting(None, "whether the monitored metric is better high or low; "
                                                               "null: from the metric")
    progress: bool = setting(True, "tqdm bar on a terminal (one plain line per epoch when output is redirected); "
                                   "false: plain lines always")


@dataclass
class OptimConfig:
    """Optimizer, built by timm's ``create_optimizer_v2`` (so every timm name works)."""

    name: str = setting("sgd", "timm optimizer name: sgd, adamw, adam, lamb, ...")
    lr: float = setting(0.1, "peak learning rate (0 holds the weights; BN statistics still move)", ge=0)
    weight_decay: float = setting(1e-4, "L2 weight decay", ge=0)
    momentum: float = setting(0.9, "momentum (sgd-like optimizers)", ge=0)
    no_decay_norm_bias: bool = setting(True, "no weight decay on norm layers and biases")


@dataclass
class SchedConfig:
    """Learning-rate schedule, built by timm's ``create_scheduler_v2`` and stepped every update."""

    name: Literal["cosine", "step", "multistep", "poly", "constant"] = setting("cosine", "learning-rate schedule, "
                                                                                         "stepped every update")
    warmup_epochs: float = setting(0.0, "linear warm-up length in epochs (fractions allowed)", ge=0)
    warmup_lr: float = setting(1e-5, "learning rate at the start of warm-up", ge=0)
    min_lr: float = setting(0.0, "floor of cosine / poly decay", ge=0)
    decay_epochs: float = setting(30.0, "step: epochs between decays", gt=0)
    decay_milestones: list[int] = setting(factory=lambda: [30, 60, 90], help="multistep: epochs at which the rate "
                                                                             "decays", ge=0)
    decay_rate: float = setting(0.1, "step / multistep: the factor at each decay; poly: the power", gt=0)


@dataclass
class FinetuneConfig:
    """The fine-tuning policy, identical for every task."""

    strategy: Literal["full", "linear_probe", "partial"] = setting("full", "full: train everything; linear_probe: "
                                                                           "only the head; partial: freeze "
                                                                           "finetune.frozen_stages")
    frozen_stages: int = setting(-1, "partial: stem (0) and stages 1..k frozen; -1: none", ge=-1)
    norm_eval: bool = setting(False, "keep every backbone BatchNorm in eval mode (frozen statistics)")
    backbone_lr_mult: float = setting(1.0, "backbone learning rate = optim.lr x this", ge=0)
    layer_decay: float | None = setting(None, "lr x decay^(depth from the head) per backbone stage; null: off",
                                        gt=0, le=1)
    unfreeze_at: dict[int, list[int]] = setting(factory=dict, help="epoch -> backbone stages to unfreeze then, "
                                                                   "e.g. {3: [4], 6: [3]}")


@dataclass
class Config:
    """A whole run. ``model`` and ``data`` are the task's own dataclasses."""

    task: str = setting(help="the task: classification, detection, segmentation or face")
    model: Any = setting(None, "the task's model: a registry backbone and the task's head")
    data: Any = setting(None, "the task's data: format, files, preprocessing and augmentation")
    name: str = setting("default", "run name: the run directory is <output_dir>/<task>/<name> (-2, -3, ... when "
                                   "it exists)")
    output_dir: str = setting("runs", "parent folder of run directories")
    output: str | None = setting(None, "this exact run directory instead (--output)")
    train: TrainConfig = setting(factory=TrainConfig, help="the loop: length, batch, precision, bookkeeping")
    optim: OptimConfig = setting(factory=OptimConfig, help="the optimizer (timm create_optimizer_v2)")
    sched: SchedConfig = setting(factory=SchedConfig, help="the learning-rate schedule (timm create_scheduler_v2)")
    finetune: FinetuneConfig = setting(factory=FinetuneConfig, help="the fine-tuning policy, the same for every "
                                                                    "task")
    tasks: dict[str, Any] | None = setting(None, "a joint run (task: a+b): each head's {model, data, weight}; "
                                                 "model.backbone, train, optim, sched and finetune are shared")

    def validate(self) -> None:
        if self.tasks is not None and "+" not in self.task:
            raise ConfigError(f"tasks: only a joint run (task: a+b) lists heads; task {self.task} has one")

    @property
    def run_dir(self) -> Path:
        return Path(self.output) if self.output else Path(self.output_dir) / self.task / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def read_config(path_or_task: str | Path, overrides: Sequence[str], task_class: Callable[[str], Any]) -> Config:
    """A YAML file, a packaged name or a task name, read and merged over its base, overrides applied, checked.

    This module imports no task: ``task_class`` (name -> the task's class: its ``ModelConfig``, ``DataConfig`` and
    ``default_config``) is handed over by the caller. ``resvision.load_config`` (``tasks.load_config``) is this with
    the task table's ``get_task_class``.
    """
    raw = _read_with_base(_resolve_path(path_or_task, task_class))
    return check_config(_named_after_backbone(raw, apply_overrides(raw, overrides), overrides), task_class)


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


def check_config(raw: dict[str, Any], task_class: Callable[[str], Any]) -> Config:
    """Check a plain nested dict (already merged) against the schema of its task, ``task_class(raw["task"])``
    (handed over by the caller: ``tasks.config_from_dict`` passes the task table's ``get_task_class``)."""
    raw = dict(raw)
    task = raw.get("task")
    if not isinstance(task, str):
        raise ConfigError("config has no 'task' key (e.g. task: classification)")
    task_cls = task_class(task)
    raw.setdefault("model", {})
    raw.setdefault("data", {})
    return _convert(Config, raw, "", {"model": task_cls.ModelConfig, "data": task_cls.DataConfig})


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML; ``load_config`` (``resvision.tasks``) reads it back to an equal config."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def packaged_configs() -> list[str]:
    """Names of the YAML configs shipped with the package, e.g. ``classification/classifier_resnet20_digits``."""
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.glob("*/*.yaml"))


def _resolve_path(path_or_task: str | Path, task_class: Callable[[str], Any]) -> Path:
    path = Path(path_or_task)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    name = str(path_or_task)
    if "/" not in name:
        default = task_class(name).default_config
        if not default:
            raise ConfigError(f"task {name!r} has no packaged config: give --config FILE")
        name = default
        if Path(name).suffix in (".yaml", ".yml") and Path(name).is_file():  # a plugin's own file
            return Path(name)
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


# ---------------------------------------------------------------------------------------------
# Describing: the resolved config with each key's type, default and help
# ---------------------------------------------------------------------------------------------
def describe_config(cfg: Any) -> str:
    """``cfg`` (a :class:`Config` or any config section) as YAML whose every key carries a comment with its type,
    its default where the value differs, and its one-line help. The text loads back (``yaml.safe_load``) to
    ``cfg.to_dict()``, so it can start a config file of one's own."""
    lines: list[str] = []
    _describe(cfg, 0, lines)
    return "\n".join(lines) + "\n"


def _describe(obj: Any, indent: int, lines: list[str]) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, pad = getattr(obj, f.name), "  " * indent
        typ = _type_text(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        changed = "" if default is dataclasses.MISSING or dataclasses.is_dataclass(value) or value == default \
            else f", default {_flow(default)}"
        comment = f"# {typ}{changed}: {f.metadata.get('help', '')}"
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:  # {f.metadata.get('help', '')}")
            _describe(value, indent + 1, lines)
        else:
            text = f"{pad}{f.name}: {_flow(value)}"
            lines.append(f"{text:<40} {comment}")


def _type_text(typ: Any) -> str:
    """A type as a user reads it: ``Literal["bn", "frozen_bn"] | None`` -> ``bn | frozen_bn | null``."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is Literal:
        return " | ".join(_flow(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_text(a) for a in args)
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_text(a) for a in args)}]"
    return "any" if typ is Any else _type_name(typ)


def _flow(value: Any) -> str:
    """One value as YAML on one line (flow style)."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").removesuffix(" ...")
