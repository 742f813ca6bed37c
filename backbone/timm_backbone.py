"""Any timm model as a :class:`Backbone`: ``build_backbone("timm:convnext_tiny")``.

The model is created with ``features_only=True`` and wrapped so that it speaks our contract:
outputs are named by their reduction, ``"c{log2(stride)}"`` (stride 2 -> ``c1`` ... 32 -> ``c5``),
the names the native ResNets use, so a config can swap ``resnet50`` for ``timm:resnet50`` without
touching the neck. Channels and strides come from timm's ``feature_info``.

Stage grouping for freezing (:meth:`TimmBackbone.stage_modules`): the feature network's children are
walked in registration order (descending into a child that *contains* a feature module, e.g. the
``blocks`` Sequential of MobileNet / EfficientNet) and cut after every module that emits one of timm's
features. Group 0 is therefore everything up to the first (stride-2) feature, i.e. the stem, and group
``k`` ends at feature ``k``; for ``timm:resnet50`` this is exactly ``[conv1+bn1+act1, maxpool+layer1,
layer2, layer3, layer4]``, the same split as our own ResNet. Models whose features are not children of
the feature network (hook / getter based, e.g. ViTs) form a single group.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from resvision.backbone.base import Backbone, FeatureSpec, select_specs
from resvision.backbone.registry import TIMM_KEY, register_backbone
from resvision.backbone.weights import (LoadReport, is_offline, is_timm_weights_spec, read_state_dict,
                                       timm_weights_file)
from resvision.errors import ConfigError, WeightsError

# is_timm_weights_spec lives in weights.py (the registry reads it without importing timm code); kept here by name
__all__ = ["TimmBackbone", "timm_backbone", "is_timm_weights_spec", "timm_feature_specs"]


def _feature_name(reduction: int) -> str:
    log2 = math.log2(reduction)
    return f"c{int(log2)}" if log2.is_integer() else f"r{reduction}"


def timm_feature_specs(info: Sequence[dict[str, Any]]) -> list[FeatureSpec]:
    """Names every entry of timm's ``feature_info.info`` by its reduction.

    Repeated reductions (e.g. the blocks of a ViT, all at stride 16) get a suffix: ``c4_0``, ``c4_1``...
    Non power-of-two reductions are named ``r<reduction>`` (e.g. ``r14`` for patch-14 ViTs).
    """
    names = [_feature_name(int(fi["reduction"])) for fi in info]
    specs, seen = [], {n: 0 for n in names}
    for base, fi in zip(names, info):
        name = f"{base}_{seen[base]}" if names.count(base) > 1 else base
        seen[base] += 1
        specs.append(FeatureSpec(name, int(fi["num_chs"]), int(fi["reduction"])))
    return specs


def _default_features(specs: Sequence[FeatureSpec]) -> list[str]:
    # Like the native ResNets, the default is the stage outputs (stride >= 4), not the stride-2 stem
    # activation: "timm:resnet50" and "resnet50" then declare the same c2..c5.
    staged = [s.name for s in specs if s.stride >= 4]
    return staged or [s.name for s in specs]


def _matches(name: str, target: str) -> bool:
    # FeatureListNet flattens Sequentials, renaming "blocks.0" to "blocks_0".
    return name == target or name == target.replace(".", "_")


def _units(module: nn.Module, targets: Sequence[str], prefix: str = "") -> Iterator[str]:
    for child_name, _ in module.named_children():
        full = prefix + child_name
        if any(t.startswith(full + ".") for t in targets):
            yield from _units(module.get_submodule(child_name), targets, full + ".")
        else:
            yield full


def _stage_groups(body: nn.Module, feature_modules: Sequence[str]) -> list[list[str]]:
    groups: list[list[str]] = []
    current: list[str] = []
    for name in _units(body, feature_modules):
        current.append(name)
        if any(_matches(name, t) for t in feature_modules):
            groups.append(current)
            current = []
    if current:  # trailing modules (e.g. a final conv after the last feature) join the last stage
        groups[-1].extend(current) if groups else groups.append(current)
    return groups


class TimmBackbone(Backbone):
    """Wraps a timm ``features_only`` network.

    Args:
        body: The timm feature network (``timm.create_model(..., features_only=True)``).
        model_name: timm model name, for messages.
        specs: One spec per output of ``body``, in its output order.
        feature_modules: Module names of *all* timm features of the model, used to cut stages.
    """

    def __init__(self, body: nn.Module, model_name: str, specs: Sequence[FeatureSpec],
                 feature_modules: Sequence[str]) -> None:
        super().__init__()
        self.body = body
        self.model_name = model_name
        self.feature_specs = list(specs)
        # Module names rather than modules: registering them again would duplicate state_dict keys.
        self._stage_names = _stage_groups(body, feature_modules)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Runs the timm feature network.

        Args:
            x: Images, shape ``(N, C_in, H, W)``.

        Returns:
            ``{spec.name: (N, spec.channels, ~H / spec.stride, ~W / spec.stride)}``.
        """
        feats = self.body(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        return {spec.name: f for spec, f in zip(self.feature_specs, feats)}

    def stage_modules(self) -> list[nn.Module]:
        """Stages as ``ModuleList`` views over the body's modules; see the module docstring."""
        return [nn.ModuleList([self.body.get_submodule(n) for n in group]) for group in self._stage_names]

    def adapt_state_dict(self, state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """Accepts our own layout (``body.*``) or a full timm model's (head keys are dropped)."""
        if all(k.startswith("body.") for k in state_dict):
            return dict(state_dict), []
        children = dict(self.body.named_children())
        mapped, dropped = {}, []
        for key, value in state_dict.items():
            new_key = _map_timm_key(key, children)
            if new_key is None:
                dropped.append(key)
            else:
                mapped["body." + new_key] = value
        return mapped, dropped


def _map_timm_key(key: str, children: dict[str, nn.Module]) -> str | None:
    parts = key.split(".")
    for i in range(1, len(parts)):
        for child in (".".join(parts[:i]), "_".join(parts[:i])):
            if child in children:
                return ".".join([child, *parts[i:]])
    return None


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Sets HF_HUB_OFFLINE=1 while timm runs, when RESVISION_OFFLINE asks for no network."""
    if not is_offline():
        yield
        return
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


# Every timm model name and pretrained tag is lower-case letters, digits and "_". Anything else is refused
# up front: timm would also resolve "hf-hub:<repo>" and "local-dir:<path>", reading configs and weights
# from outside resvision's loader, and a path such as "../../x" would reach timm's messages mangled.
_TIMM_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?")
# create_model options that make timm read weights itself (checkpoint_path: torch.load of any file;
# pretrained_cfg / _overlay: file / url / hub sources), bypassing read_state_dict's safe loading.
_WEIGHT_SOURCE_OPTIONS = ("checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay")


def _check_model_name(timm: Any, model_name: str) -> None:
    if not _TIMM_NAME.fullmatch(model_name):
        raise ConfigError(f"backbone 'timm:{model_name}': {model_name!r} is not a timm model name (letters, digits "
                          "and '_', optionally '.<pretrained tag>', e.g. 'timm:resnet50.a1_in1k')")
    arch, _, tag = model_name.partition(".")
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise ConfigError(f"unknown timm model {arch!r}{hint} (see timm.list_models())")
    tagged = timm.list_pretrained(f"{arch}.*")
    if tag and model_name not in tagged:
        tags = [n.partition(".")[2] for n in tagged]
        raise ConfigError(f"timm has no pretrained tag {tag!r} for {arch}; valid tags: {', '.join(tags) or 'none'}")


def _check_options(options: dict[str, Any]) -> None:
    refused = [k for k in _WEIGHT_SOURCE_OPTIONS if k in options]
    if refused:
        raise ConfigError(f"timm option {refused[0]!r} would let timm load weights itself, outside resvision's safe "
                          "loader; use pretrained=<file> instead (model.backbone.pretrained in a config: read with "
                          "torch.load(weights_only=True) or safetensors) or pretrained='timm:<tag>'")


def _create(timm: Any, model_name: str, options: dict[str, Any], **fixed: Any) -> nn.Module:
    """``timm.create_model(features_only=True)`` with our ``fixed`` arguments and the user's ``options``."""
    try:
        with _hub_offline():
            return timm.create_model(model_name, features_only=True, **fixed, **options)
    except (TypeError, KeyError) as exc:
        if not options:
            raise  # nothing of the user's in the call: a bug, keep the traceback
        # TypeError: an argument the model does not take; KeyError: an unknown layer name such as
        # act_layer='nosuchact' (timm looks names up in dicts).
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyError):
            reason = f"unknown name {reason}"
        raise ConfigError(f"timm.create_model({model_name!r}, {given}) rejected the options: {reason}") from exc


def _probe_feature_info(timm: Any, model_name: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """All of timm's features for the model, from a weightless build on the meta device."""
    try:
        with torch.device("meta"):
            probe = _create(timm, model_name, options, pretrained=False)
    except ConfigError:
        raise
    except Exception:  # some models cannot be built on "meta"; pay for a real build instead
        probe = _create(timm, model_name, options, pretrained=False)
    return [dict(fi) for fi in probe.feature_info.info]


def _timm_weights(timm: Any, model_name: str, spec: str) -> tuple[str, dict[str, Tensor], str]:
    """Resolves ``"timm"`` / ``"timm:<tag>"`` to (model name with tag, state dict, source)."""
    arch, _, own_tag = model_name.partition(".")
    tag = spec[len("timm:"):] if spec.startswith("timm:") else own_tag
    full_name = f"{arch}.{tag}" if tag else arch
    if not tag:
        cfg = timm.models.get_pretrained_cfg(arch)
        if cfg is None or not cfg.tag:
            raise WeightsError(f"timm has no pretrained weights for {arch}")
        full_name = f"{arch}.{cfg.tag}"
    path = timm_weights_file(full_name)
    return full_name, read_state_dict(path), f"timm:{full_name} ({path})"


def _dilated_specs(timm: Any, model_name: str, options: dict[str, Any], natural: list[FeatureSpec],
                   output_stride: int) -> list[FeatureSpec]:
    """The undilated network's feature names with the strides timm reports at ``output_stride``; one line
    naming the setting when the model cannot honour it (takes no such option, or ignores it)."""
    if output_stride not in (8, 16):
        raise ConfigError(f"output_stride must be one of [8, 16] (None keeps the network's own strides), "
                          f"got {output_stride}")
    try:
        info = _probe_feature_info(timm, model_name, options | {"output_stride": output_stride})
    except (ConfigError, AssertionError, ValueError, TypeError) as err:
        raise ConfigError(f"output_stride={output_stride}: timm:{model_name} cannot dilate its stages "
                          f"({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__})") from None
    own = max(s.stride for s in natural)
    if len(info) != len(natural) or max(int(fi["reduction"]) for fi in info) != output_stride or own <= output_stride:
        raise ConfigError(f"output_stride={output_stride}: timm:{model_name} has a deepest stride of {own} and does "
                          f"not dilate it to {output_stride}; leave it unset")
    return [FeatureSpec(n.name, int(fi["num_chs"]), int(fi["reduction"])) for n, fi in zip(natural, info)]


@register_backbone(TIMM_KEY)
def timm_backbone(*, model_name: str, out_features: Sequence[str] | None = None, norm: str = "bn",
                  pretrained: str | None = None, output_stride: int | None = None, **kwargs: Any) -> TimmBackbone:
    """Builds ``timm:<model_name>`` as a backbone.

    Args:
        model_name: Any ``timm.list_models()`` name, optionally with a pretrained tag (``resnet50.a1_in1k``).
        out_features: Names such as ``"c3"``; None = every feature with stride >= 4.
        norm: ``"bn"`` or ``"frozen_bn"`` (BatchNorm layers converted with timm's freeze_batch_norm_2d,
            which also handles timm's fused BatchNormAct2d).
        pretrained: ``"timm"`` or ``"timm:<tag>"``: timm's weights, read from the local cache (and
            downloaded there unless RESVISION_OFFLINE=1) and loaded by timm's own loader.
        output_stride: 8 or 16: timm's own ``output_stride`` (dilated deepest stages) for the models that support
            it; features keep the names of the undilated network (``c5`` stays ``c5``) with their real strides.
        **kwargs: Passed to ``timm.create_model`` (e.g. ``drop_path_rate``, ``act_layer``), except the
            options that name a weights source (``checkpoint_path``, ``pretrained_cfg[_overlay]``):
            weights come only through ``pretrained`` / :func:`build_backbone`'s safe loader.

    Returns:
        A :class:`TimmBackbone`.

    Raises:
        ConfigError: Unknown model, tag, option or feature name; a weights-source option.
        WeightsError: Weights unknown, not cached while offline, or not loadable.
    """
    import timm

    _check_model_name(timm, model_name)
    _check_options(kwargs)
    info = _probe_feature_info(timm, model_name, kwargs)
    all_specs = timm_feature_specs(info)
    if output_stride is not None:
        all_specs, kwargs = _dilated_specs(timm, model_name, kwargs, all_specs, output_stride), \
            kwargs | {"output_stride": output_stride}
        info = _probe_feature_info(timm, model_name, kwargs)
    specs = select_specs(all_specs, out_features, default=_default_features(all_specs))
    out_indices = [int(info[all_specs.index(s)]["index"]) for s in specs]
    report = None
    if pretrained:
        full_name, state_dict, source = _timm_weights(timm, model_name, pretrained)
        try:
            # timm's own loader (its filter_fn adapts e.g. position embeddings), fed a state dict that we
            # read safely, so timm never unpickles or downloads anything itself.
            body = _create(timm, full_name, kwargs, pretrained=True, out_indices=out_indices,
                           pretrained_cfg_overlay=dict(state_dict=state_dict))
        except ConfigError:
            raise
        except Exception as exc:
            raise WeightsError(f"timm could not load {source}: {str(exc).strip().splitlines()[0]}") from exc
        report = LoadReport(len(state_dict), source)
    else:
        body = _create(timm, model_name, kwargs, pretrained=False, out_indices=out_indices)
    if norm == "frozen_bn":
        body = timm.layers.freeze_batch_norm_2d(body)
    backbone = TimmBackbone(body, model_name, specs, [str(fi["module"]) for fi in info])
    backbone.load_report = report
    return backbone
