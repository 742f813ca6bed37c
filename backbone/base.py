"""The backbone contract shared by every feature extractor: declared outputs and stage freezing.

A backbone maps an image batch to a dict of named feature maps and *declares* those maps up front
(:class:`FeatureSpec`, like Detectron2's ``ShapeSpec`` or timm's ``feature_info``) so that necks and
heads size themselves without running the network. It also exposes its parameters grouped by depth
(:meth:`Backbone.stage_modules`) so the fine-tuning engine can freeze, unfreeze and decay learning rates
stage by stage with one implementation for every backbone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from resvision.errors import ConfigError

__all__ = ["FeatureSpec", "Backbone", "select_specs"]


@dataclass(frozen=True)
class FeatureSpec:
    """Shape of one backbone output.

    Attributes:
        name: Key of the feature map in the forward dict (``"c2"`` ... ``"c5"`` for ResNets, after
            the conv2_x ... conv5_x stages of He et al. 2016, Table 1).
        channels: Number of channels ``C`` of the map.
        stride: Total down-sampling factor relative to the input (an ``H x W`` input gives a
            ``ceil(H / stride) x ceil(W / stride)`` map for the usual padded convolutions).
    """

    name: str
    channels: int
    stride: int


def select_specs(available: Sequence[FeatureSpec], out_features: Sequence[str] | None,
                 default: Sequence[str] | None = None) -> list[FeatureSpec]:
    """Picks the requested outputs among the ones a network can produce.

    Args:
        available: Every feature the network can emit, in network (increasing depth) order.
        out_features: Requested names, or None for ``default``.
        default: Names used when ``out_features`` is None; None means all of ``available``.

    Returns:
        The selected specs in network order (necks such as FPN expect increasing stride, so the
        order of the request does not matter).

    Raises:
        ConfigError: A requested name does not exist, or the request is empty.
    """
    if isinstance(out_features, str):
        raise ConfigError(f"out_features must be a list of names, got the string {out_features!r}")
    names = [s.name for s in available]
    if out_features is not None:
        wanted = list(out_features)
    else:
        wanted = list(default) if default is not None else names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise ConfigError(f"unknown out_features {unknown}; this backbone provides {names}")
    if not wanted:
        raise ConfigError(f"out_features is empty; choose some of {names}")
    return [s for s in available if s.name in wanted]


class Backbone(nn.Module):
    """Base class of every backbone: named multi-scale outputs plus stage-wise freezing.

    Subclasses set ``self.feature_specs`` in ``__init__`` and implement :meth:`forward` and
    :meth:`stage_modules`. Freezing follows the torchvision / MMDetection ``frozen_stages``
    convention: stage 0 is the stem, stage ``k`` the k-th residual stage.

    Attributes:
        feature_specs: One :class:`FeatureSpec` per output, in the order of the forward dict.
        norm_eval: When True every BatchNorm layer stays in eval mode under ``.train()``
            (MMDetection's ``norm_eval``): fine-tuning with small batches then keeps the
            pretrained statistics instead of estimating new ones from a few images.
    """

    def __init__(self) -> None:
        super().__init__()
        self.feature_specs: list[FeatureSpec] = []
        self.norm_eval: bool = False
        # Indices into stage_modules() that are frozen. A set of ints rather than module references,
        # so that no module is registered twice and deepcopy (EMA) / pickling stay trivial.
        self._frozen_stages: set[int] = set()
        # What build_backbone loaded (a weights.LoadReport), so callers can log "loaded N tensors from X".
        self.load_report: object | None = None

    # ----------------------------------------------------------------------------- interface
    def forward(self, x: Tensor) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """Computes the declared feature maps.

        Args:
            x: Images, shape ``(N, 3, H, W)``.

        Returns:
            ``{spec.name: Tensor (N, spec.channels, H / spec.stride, W / spec.stride)}`` for every
            spec in :attr:`feature_specs`, in that order.
        """
        raise NotImplementedError

    def stage_modules(self) -> list[nn.Module]:  # pragma: no cover - abstract
        """Returns ``[stem, stage1, stage2, ...]``: every parameter lives in exactly one entry."""
        raise NotImplementedError

    @property
    def out_channels(self) -> int:
        """Channels of the last (deepest) declared output."""
        return self.feature_specs[-1].channels

    @property
    def feature_names(self) -> list[str]:
        """Names of the outputs, in forward-dict order."""
        return [s.name for s in self.feature_specs]

    # ----------------------------------------------------------------------------- freezing
    def freeze_stages(self, n: int) -> None:
        """Freezes the stem and the first ``n`` stages (``n = -1``: nothing, ``0``: the stem only).

        Frozen parameters get ``requires_grad = False`` and the frozen modules are kept in eval mode,
        even after ``model.train()``, so their BatchNorm running statistics are not updated either:
        a frozen stage computes exactly what the pretrained one did.

        Args:
            n: Index of the last frozen stage, in ``[-1, len(stage_modules()) - 1]``.

        Raises:
            ConfigError: ``n`` is out of range.
        """
        stages = self.stage_modules()
        if not -1 <= n < len(stages):
            raise ConfigError(f"frozen_stages={n} is out of range for this backbone: use -1 (nothing), "
                              f"0 (stem) ... {len(stages) - 1} (stem and all {len(stages) - 1} stages)")
        for index in range(n + 1):
            stages[index].requires_grad_(False)
            self._frozen_stages.add(index)
        self._apply_eval_rules()

    def unfreeze_stages(self, indices: Iterable[int]) -> None:
        """Makes the given stages trainable again (scheduled unfreezing).

        Args:
            indices: Positions in :meth:`stage_modules` (0 = stem).

        Raises:
            ConfigError: An index is out of range.
        """
        stages = self.stage_modules()
        for index in indices:
            if not 0 <= index < len(stages):
                raise ConfigError(f"cannot unfreeze stage {index}: valid stages are 0..{len(stages) - 1}")
            stages[index].requires_grad_(True)
            self._frozen_stages.discard(index)
            # The stage follows the model's mode again; norm_eval is re-applied right after.
            stages[index].train(self.training)
        self._apply_eval_rules()

    @property
    def frozen_stage_indices(self) -> list[int]:
        """Sorted indices of the currently frozen stages."""
        return sorted(self._frozen_stages)

    def train(self, mode: bool = True) -> Backbone:
        """Sets train/eval mode, then keeps frozen stages (and all BN layers if ``norm_eval``) in eval.

        Args:
            mode: True for training mode.

        Returns:
            self.
        """
        super().train(mode)
        self._apply_eval_rules()
        return self

    def _apply_eval_rules(self) -> None:
        if not self.training:
            return
        stages = self.stage_modules()
        for index in self._frozen_stages:
            stages[index].eval()
        if self.norm_eval:
            for module in self.modules():
                # _BatchNorm covers BatchNorm1/2/3d, SyncBatchNorm and timm's BatchNormAct2d.
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    # ----------------------------------------------------------------------------- weights
    def adapt_state_dict(self, state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """Maps a foreign state dict (torchvision, timm, a task checkpoint) to this module's keys.

        Called by :func:`resvision.backbone.load_pretrained` after the generic unwrapping
        (``module.`` / ``backbone.`` prefixes). The default keeps everything.

        Args:
            state_dict: Checkpoint tensors by name.

        Returns:
            ``(mapped_state_dict, dropped_keys)``: dropped keys are head tensors that a backbone
            legitimately does not have (e.g. a classifier ``fc``).
        """
        return dict(state_dict), []


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def is_frozen(module: nn.Module) -> bool:
    """True when the module has parameters and none of them requires grad."""
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)

