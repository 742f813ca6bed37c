"""Pretrained weights: torchvision names, timm tags and local files, loaded strictly and safely.

Every file is read with ``torch.load(..., weights_only=True)`` or safetensors, never with a full
unpickler: a checkpoint from the internet must not be able to run code. Nothing is downloaded when
``RESVISION_OFFLINE=1``; a missing file then fails with one line saying which file to put where.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from resvision.backbone.base import Backbone
from resvision.errors import UserError, WeightsError

__all__ = ["LoadReport", "load_pretrained", "read_state_dict", "unwrap_state_dict", "is_offline",
           "torchvision_weights_url", "torchvision_cache_path", "fetch_url", "is_timm_weights_spec",
           "timm_weights_file", "sha256_file"]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
# Prefixes added by wrappers around a model: DDP, torch.compile, and our task models.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 5


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did, for a log line such as ``loaded 320 tensors from X``."""

    num_tensors: int
    source: str
    dropped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        extra = f" (ignored {len(self.dropped)} head tensors)" if self.dropped else ""
        return f"loaded {self.num_tensors} tensors from {self.source}{extra}"


def is_offline() -> bool:
    """True when ``RESVISION_OFFLINE`` is set to a true value: never touch the network."""
    return os.environ.get("RESVISION_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | os.PathLike[str], sha256: str | None = None) -> dict[str, Tensor]:
    """Reads a weights file without executing code from it.

    Args:
        path: ``.safetensors`` (safetensors) or any other file (``torch.load`` with ``weights_only=True``,
            on CPU).
        sha256: Expected hex digest of the file; a prefix of at least 8 characters is accepted.

    Returns:
        The file's top-level mapping (a state dict, or a checkpoint dict holding one).

    Raises:
        WeightsError: Missing file, digest mismatch, or unreadable / corrupt content.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if sha256:
        expected, actual = sha256.strip().lower(), sha256_file(path)
        if len(expected) < 8 or not actual.startswith(expected):
            raise WeightsError(f"sha256 mismatch for weights file {path}: expected {expected}, got {actual}")
    try:
        if path.suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt archive, truncated file, forbidden pickle global, ...
        raise WeightsError(f"cannot read weights file {path}: {_first_line(exc)}") from exc
    if not isinstance(data, Mapping):
        raise WeightsError(f"weights file {path} holds a {type(data).__name__}, not a state dict")
    return dict(data)


def unwrap_state_dict(data: Mapping[str, object]) -> dict[str, Tensor]:
    """Extracts backbone tensors from a raw state dict or a checkpoint.

    Accepts ``{"state_dict": sd}`` / ``{"model": sd}`` checkpoints (ours save the task model under
    ``"model"``), strips ``module.`` / ``_orig_mod.`` (DDP / torch.compile), and keeps only the
    ``backbone.*`` keys of a task model (``backbone.body.*`` for a detector), stripping that prefix.

    Args:
        data: What :func:`read_state_dict` returned.

    Returns:
        Tensors by parameter / buffer name.
    """
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(data.get(key), Mapping):
            data = data[key]  # type: ignore[assignment]
            break
    tensors = {k: v for k, v in data.items() if isinstance(v, Tensor)}
    for prefix in _WRAPPER_PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    # A task model: classification / segmentation keep the backbone under "backbone.", detection under
    # "backbone.body." (torchvision's BackboneWithFPN; "backbone.fpn." is the neck, not the backbone).
    for prefix in ("backbone.body.", "backbone."):
        if any(k.startswith(prefix) for k in tensors):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return tensors


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def load_strict(module: nn.Module, tensors: Mapping[str, Tensor], source: str,
                error: type[UserError] = WeightsError) -> int:
    """The one strict loader (pretrained backbones here, whole models from checkpoints in
    ``engine.checkpoint``): every tensor must match, or ``error`` names the first few missing,
    unexpected and mis-shaped keys in one line.

    BatchNorm ``num_batches_tracked`` counters are not weights and never block a load: extra ones
    are dropped, as torchvision's FrozenBatchNorm2d does (a model trained with ordinary BN loads
    into a frozen-BN one), and missing ones keep the module's value.

    Returns:
        The number of tensors loaded.
    """
    own = module.state_dict()
    counter = lambda k: k.endswith("num_batches_tracked")  # noqa: E731
    missing = [k for k in own if k not in tensors and not counter(k)]
    unexpected = [k for k in tensors if k not in own and not counter(k)]
    shapes = [f"{k} {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"missing: {_listed(missing)}" if missing else "",
                 f"unexpected: {_listed(unexpected)}" if unexpected else "",
                 f"shape mismatch (file vs model): {_listed(shapes)}" if shapes else ""]
        raise error(f"{source} does not fit this model: {'; '.join(p for p in parts if p)}")
    loadable = {k: v for k, v in tensors.items() if k in own}
    module.load_state_dict(loadable, strict=False)  # only counters can be absent, checked above
    return len(loadable)


def load_state_dict_strict(backbone: Backbone, state_dict: Mapping[str, object], source: str) -> LoadReport:
    """Loads a (possibly wrapped) state dict into ``backbone`` with :func:`load_strict`.

    Args:
        backbone: Destination.
        state_dict: Raw file content (see :func:`unwrap_state_dict`).
        source: Human-readable origin, used in messages and the report.

    Returns:
        A :class:`LoadReport`.

    Raises:
        WeightsError: Missing / unexpected keys or shape mismatches, naming the first few.
    """
    tensors, dropped = backbone.adapt_state_dict(unwrap_state_dict(state_dict))
    loaded = load_strict(backbone, tensors, f"weights from {source}")
    return LoadReport(loaded, source, dropped)


# ----------------------------------------------------------------------------- torchvision
def _torchvision_weights(arch: str, weights: str):  # -> torchvision.models.WeightsEnum member
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except (ValueError, KeyError) as exc:
        raise WeightsError(f"torchvision has no weights for backbone {arch!r}") from exc
    valid = [w for w in enum.__members__ if w != "DEFAULT"] + ["DEFAULT"]
    if weights not in enum.__members__:
        raise WeightsError(f"unknown torchvision weights {weights!r} for {arch}; valid: {', '.join(valid)}")
    return enum[weights]


def torchvision_weights_url(arch: str, weights: str) -> str:
    """URL of torchvision weights, e.g. ``("resnet50", "IMAGENET1K_V2")``."""
    return _torchvision_weights(arch, weights).url


def torchvision_cache_path(url: str) -> Path:
    """Where torchvision caches ``url``: ``<torch.hub.get_dir()>/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def fetch_url(url: str, path: Path, what: str) -> Path:
    """Returns the cached file for ``url``, downloading it unless offline."""
    if path.is_file():
        return path
    hint = f"{what} are not cached and cannot be downloaded; put {url} at {path}"
    if is_offline():
        raise WeightsError(f"{hint} (RESVISION_OFFLINE=1)")
    # torchvision / timm release files end in "-<sha256 prefix>.pth": verify it like torch.hub does.
    match = re.search(r"-([a-f0-9]{6,})\.", os.path.basename(url))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None)
    except Exception as exc:  # no network, HTTP error, hash mismatch
        raise WeightsError(f"{hint} ({_first_line(exc)})") from exc
    return path


def _load_torchvision(backbone: Backbone, arch: str, weights: str) -> LoadReport:
    url = torchvision_weights_url(arch, weights)
    path = fetch_url(url, torchvision_cache_path(url), f"torchvision weights {arch} {weights}")
    return load_state_dict_strict(backbone, read_state_dict(path), f"torchvision:{weights} ({path})")


# ----------------------------------------------------------------------------- timm
def is_timm_weights_spec(spec: str | None) -> bool:
    """True for ``"timm"`` and ``"timm:<tag>"`` (timm's own pretrained weights)."""
    return isinstance(spec, str) and (spec == "timm" or spec.startswith("timm:"))


def timm_weights_file(model_name: str) -> Path:
    """Local file holding timm's pretrained weights for ``model_name`` (``arch.tag``), fetched if allowed.

    Looks in the Hugging Face cache (``model.safetensors``, then ``pytorch_model.bin``) or, for
    weights hosted elsewhere, in torch.hub's cache; downloads only when not offline.

    Raises:
        WeightsError: Unknown architecture / tag, or not cached and not downloadable.
    """
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(model_name, allow_unregistered=False)
    except RuntimeError as exc:
        arch = model_name.split(".")[0]
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
        raise WeightsError(f"timm has no pretrained weights {model_name!r}; valid tags for {arch}: "
                           f"{', '.join(tags) or 'none'}") from exc
    if cfg.hf_hub_id:
        return _hf_file(cfg.hf_hub_id, model_name, cfg.hf_hub_filename)
    if cfg.url:
        return fetch_url(cfg.url, torchvision_cache_path(cfg.url), f"timm weights {model_name}")
    raise WeightsError(f"timm weights {model_name} have no download location; pass a local file instead")


def _hf_file(repo_id: str, model_name: str, filename: str | None) -> Path:
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    for name in names:
        cached = try_to_load_from_cache(repo_id, name)
        if isinstance(cached, str):
            return Path(cached)
    hint = (f"timm weights {model_name} are not cached and cannot be downloaded; put {names[0]} from "
            f"https://huggingface.co/{repo_id} into the Hugging Face cache {constants.HF_HUB_CACHE} "
            f"(`hf download {repo_id}` on a connected machine) or pass the file as a local path")
    if is_offline():
        raise WeightsError(f"{hint} (RESVISION_OFFLINE=1)")
    try:
        return Path(hf_hub_download(repo_id, names[0]))
    except Exception as exc:
        raise WeightsError(f"{hint} ({_first_line(exc)})") from exc


def _load_timm_for_resnet(backbone: Backbone, arch: str, tag: str | None) -> LoadReport:
    model_name = f"{arch}.{tag}" if tag else arch
    path = timm_weights_file(model_name)
    return load_state_dict_strict(backbone, read_state_dict(path), f"timm:{model_name} ({path})")


# ----------------------------------------------------------------------------- entry point
def load_pretrained(backbone: Backbone, spec: str, arch: str | None = None, sha256: str | None = None) -> LoadReport:
    """Loads pretrained weights into ``backbone`` in place.

    Args:
        backbone: A built backbone.
        spec: ``"torchvision:<WEIGHTS>"`` (or a bare weights name such as ``"IMAGENET1K_V2"`` /
            ``"DEFAULT"``), ``"timm"`` / ``"timm:<tag>"`` (timm's weights for ``arch``), or a local
            file path.
        arch: Registered backbone name, needed for torchvision / timm specs.
        sha256: Expected SHA-256 of a local file.

    Returns:
        A :class:`LoadReport` (``str(report)`` reads ``loaded N tensors from X``).

    Raises:
        WeightsError: See :func:`read_state_dict` and :func:`load_state_dict_strict`.
    """
    if spec.startswith("torchvision:") or (arch and _is_bare_torchvision_name(spec, arch)):
        return _load_torchvision(backbone, _need_arch(arch, spec), spec.split(":", 1)[-1])
    if is_timm_weights_spec(spec):
        arch = _need_arch(arch, spec)
        if arch.startswith("timm:"):
            raise WeightsError(f"timm weights for {arch} are chosen when building it: "
                               f"build_backbone({arch!r}, pretrained={spec!r})")
        return _load_timm_for_resnet(backbone, arch, spec[len("timm:"):] or None)
    path = Path(spec).expanduser()
    if not path.exists() and path.suffix not in TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,):
        raise WeightsError(f"pretrained={spec!r} is neither an existing file nor 'torchvision:<WEIGHTS>' "
                           f"or 'timm[:<tag>]'")
    return load_state_dict_strict(backbone, read_state_dict(path, sha256), str(path))


def _need_arch(arch: str | None, spec: str) -> str:
    if not arch:
        raise WeightsError(f"pretrained={spec!r} needs the backbone name (arch=...)")
    return arch


def _is_bare_torchvision_name(spec: str, arch: str) -> bool:
    """``"IMAGENET1K_V2"`` alone means torchvision weights when no such file exists."""
    return bool(re.fullmatch(r"[A-Z0-9_]+", spec)) and not Path(spec).exists() and not arch.startswith("timm:")
