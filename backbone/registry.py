"""Backbone registry: a plain dict of builders and a decorator, like torchvision's ``models/_api.py``.

Builders are keyword-only functions ``builder(*, out_features, norm, **options) -> Backbone``.
:func:`build_backbone` is the one entry point the rest of resvision uses: it validates the name and
options, builds, loads pretrained weights, and applies ``frozen_stages`` / ``norm_eval``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from resvision.backbone.base import Backbone
from resvision.errors import ConfigError

if TYPE_CHECKING:  # only for the annotation: the backbone package must not depend on the config layer
    from resvision.config import BackboneConfig

__all__ = ["register_backbone", "list_backbones", "get_backbone_builder", "build_backbone",
           "build_backbone_from_config", "NORMS", "TIMM_PREFIX"]

_LOG = logging.getLogger(__name__)

#: ``"timm:<model>"`` reaches any timm model; the registry holds one generic builder under this key.
TIMM_PREFIX = "timm:"
TIMM_KEY = "timm:<model>"
#: ``norm`` values: trainable BatchNorm, or BatchNorm with weights and statistics as constant buffers.
NORMS = ("bn", "frozen_bn")

_BACKBONES: dict[str, Callable[..., Backbone]] = {}

F = TypeVar("F", bound=Callable[..., Backbone])


def register_backbone(name: str) -> Callable[[F], F]:
    """Registers a backbone builder under ``name``.

    Args:
        name: Registry key, e.g. ``"resnet50"``.

    Returns:
        A decorator that stores the builder and returns it unchanged.

    Raises:
        ValueError: The name is already taken (a programming error, not a user error).
    """
    def decorator(builder: F) -> F:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = builder
        return builder
    return decorator


def list_backbones() -> list[str]:
    """Sorted registered names; every timm model is reachable through the entry ``"timm:<model>"``."""
    return sorted(_BACKBONES)


def get_backbone_builder(name: str) -> Callable[..., Backbone]:
    """Returns the builder for ``name``.

    Raises:
        ConfigError: Unknown name; the message lists close matches and points to list_backbones().
    """
    if name.startswith(TIMM_PREFIX) and TIMM_KEY in _BACKBONES:
        if len(name) == len(TIMM_PREFIX):
            raise ConfigError("backbone 'timm:' needs a timm model name, e.g. 'timm:resnet50'")
        return _BACKBONES[TIMM_KEY]
    if name not in _BACKBONES:
        close = difflib.get_close_matches(name, list(_BACKBONES), n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown backbone {name!r}{hint} (see resvision.backbone.list_backbones() "
                          f"for all {len(_BACKBONES)} names, or use 'timm:<model>')")
    return _BACKBONES[name]


def _check_options(name: str, builder: Callable[..., Backbone], options: dict[str, Any]) -> None:
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = sorted(k for k in params if k not in ("out_features", "norm", "model_name", "pretrained"))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for backbone {name!r}; valid options: {valid}")


def build_backbone(
    name: str,
    pretrained: str | None = None,
    out_features: Sequence[str] | None = None,
    frozen_stages: int = -1,
    norm: str = "bn",
    norm_eval: bool = False,
    pretrained_sha256: str | None = None,
    output_stride: int | None = None,
    **kw: Any,
) -> Backbone:
    """Builds a registered backbone, loads its weights and applies the freezing policy.

    Args:
        name: Registered name (``list_backbones()``) or ``"timm:<any timm model>"``.
        pretrained: None (random init), ``"torchvision:<WEIGHTS>"`` (e.g. ``IMAGENET1K_V2``),
            ``"timm"`` / ``"timm:<tag>"`` (timm's weights for the same architecture) or a local
            ``.pth/.pt/.bin/.safetensors`` file.
        out_features: Names of the outputs (``"c2"`` ... ``"c5"`` for ResNets); None = every stage.
        frozen_stages: -1 = none, 0 = stem, k = stem and stages 1..k (torchvision / MMDetection).
        norm: ``"bn"`` (``nn.BatchNorm2d``) or ``"frozen_bn"`` (``torchvision.ops.FrozenBatchNorm2d``,
            the usual choice for detection with small per-GPU batches).
        norm_eval: Keep every BatchNorm in eval mode during training.
        pretrained_sha256: Expected SHA-256 (hex) of a local weights file.
        output_stride: 8 or 16: the deepest stages dilate instead of striding (DeepLab), the feature specs report
            the real strides and the weights are unchanged; None keeps the network's own strides. Builders
            that take no ``output_stride`` argument refuse it.
        **kw: Builder options (e.g. ``custom``'s ``block``, ``layers``; ``timm:``'s create_model kwargs).

    Returns:
        The backbone, in train mode, with ``load_report`` set (None without ``pretrained``).

    Raises:
        ConfigError: Unknown name, option, norm, out_features name or frozen_stages value.
        WeightsError: Weights missing, corrupt or not matching the architecture.
    """
    builder = get_backbone_builder(name)
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; choose one of {list(NORMS)}")
    _check_options(name, builder, kw)
    if output_stride is not None:
        if "output_stride" not in inspect.signature(builder).parameters:
            raise ConfigError(f"output_stride={output_stride}: backbone {name!r} cannot dilate its stages; leave "
                              "it unset")
        kw["output_stride"] = output_stride
    report = None
    if name.startswith(TIMM_PREFIX):
        from resvision.backbone.weights import is_timm_weights_spec

        timm_weights = pretrained if is_timm_weights_spec(pretrained) else None
        backbone = builder(model_name=name[len(TIMM_PREFIX):], out_features=out_features, norm=norm,
                           pretrained=timm_weights, **kw)
        report = getattr(backbone, "load_report", None)
        pretrained = None if timm_weights else pretrained
    else:
        backbone = builder(out_features=out_features, norm=norm, **kw)
    if pretrained:
        from resvision.backbone.weights import load_pretrained

        report = load_pretrained(backbone, pretrained, arch=name, sha256=pretrained_sha256)
    if report is not None:
        _LOG.info("%s: %s", name, report)
    backbone.load_report = report
    backbone.registry_name = name  # what checkpoints record: the backbone a model really has
    backbone.norm_eval = bool(norm_eval)
    backbone.freeze_stages(frozen_stages)
    return backbone.train()


def build_backbone_from_config(cfg: BackboneConfig) -> Backbone:
    """:func:`build_backbone` with the settings of a config's ``model.backbone`` section.

    Freezing is not applied here: the fine-tuning policy (``finetune.*``) does that in the engine.

    Raises:
        ConfigError: As :func:`build_backbone`; also ``args`` that are build_backbone's own arguments
            (they have config keys of their own) or given for ``custom`` (whose options all live in the
            ``custom`` section).
    """
    options = dict(cfg.args)
    # Passed through **kw they would bind to build_backbone's parameters (e.g. frozen_stages would
    # silently bypass the fine-tuning policy) or clash with the ones set here.
    own = [k for k in inspect.signature(build_backbone).parameters if k in options]
    if own:
        raise ConfigError(f"model.backbone.args.{own[0]} is not a builder option; use its own config key "
                          "(model.backbone.* or finetune.*)")
    if cfg.name == "custom":
        if options:
            raise ConfigError(f"model.backbone.args {sorted(options)} are not used by backbone 'custom'; "
                              "set its options under model.backbone.custom")
        options = dataclasses.asdict(cfg.custom)
    try:
        return build_backbone(cfg.name, pretrained=cfg.pretrained, pretrained_sha256=cfg.pretrained_sha256,
                              out_features=cfg.out_features, norm=cfg.norm, output_stride=cfg.output_stride,
                              **options)
    except ConfigError as err:
        if str(err).startswith("output_stride"):
            raise ConfigError(f"model.backbone.{err}") from None  # name the config key
        raise
