"""Running exported ONNX files with ONNX Runtime, in the shape the tasks already call a torch model.

An exported file carries its resvision metadata (task, config, class names, preprocessing, parity) as one
JSON string in the ONNX ``metadata_props`` under ``resvision``; :func:`read_onnx_info` turns a file back
into the checkpoint-like dict ``eval`` / ``predict`` rebuild the task from, without any pickle.
:class:`OnnxRunner` owns one ``InferenceSession``; a task's ``onnx_model(runner)`` wraps it in a module
(:class:`OnnxModel` for tensor-in / tensor-out tasks; tasks with other call shapes keep their own wrapper, e.g.
``tasks/detection/onnx.py``), so ``evaluation_step`` and ``predict`` run unchanged. This package imports no task.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError

__all__ = ["METADATA_KEY", "OnnxModel", "OnnxRunner", "import_onnx", "import_onnxruntime", "read_onnx_info",
           "write_metadata"]

METADATA_KEY = "resvision"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("ONNX Runtime is not installed: pip install onnxruntime") from None
    return onnxruntime


def import_onnx():
    try:
        import onnx
    except ImportError:
        raise UserError("the onnx package is not installed: pip install onnx") from None
    return onnx


def read_onnx_info(path: str | Path) -> dict[str, Any]:
    """The resvision metadata of an exported file (``task``, ``backbone``, ``config``, ``meta``, ...);
    UserError naming the file when it is missing, not ONNX, or not exported by resvision."""
    onnx = import_onnx()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - any protobuf failure means a corrupt file
        raise UserError(f"cannot read {path} as ONNX: {_first_line(err)}") from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise UserError(f"{path} was not exported by resvision (no '{METADATA_KEY}' metadata): export it with "
                        "tools/export.py")
    try:
        info = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: its '{METADATA_KEY}' metadata is not JSON ({err})") from None
    if not isinstance(info, dict) or not {"task", "config", "meta"} <= info.keys():
        raise UserError(f"{path}: its '{METADATA_KEY}' metadata lacks task / config / meta")
    return info


def write_metadata(path: Path, info: dict[str, Any]) -> None:
    """Store ``info`` in the file's ONNX metadata (atomically) and in ``<file>.json`` beside it: what
    :func:`read_onnx_info` reads back."""
    onnx = import_onnx()
    model = onnx.load(str(path))
    del model.metadata_props[:]
    prop = model.metadata_props.add()
    prop.key, prop.value = METADATA_KEY, json.dumps(info)
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    sidecar = path.with_name(path.name + ".json")
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, sidecar)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class OnnxRunner:
    """One ONNX Runtime session on the CPU: numpy in, numpy out, with its inputs checked first.

    ``threads``: intra-op threads (default: torch's thread count, so both engines use the same cores).
    ``optimization``: ONNX Runtime's graph optimisation level (``all``, ``extended``, ``basic``, ``disabled``).
    """

    def __init__(self, path: str | Path, threads: int | None = None, optimization: str = "all") -> None:
        ort = import_onnxruntime()
        levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
        if optimization not in levels:
            raise UserError(f"ONNX Runtime optimisation level must be one of {', '.join(levels)}, got {optimization!r}")
        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = levels[optimization]
        options.log_severity_level = 3  # errors only: ORT warns about every unused initializer otherwise
        if not self.path.is_file():
            raise UserError(f"ONNX file not found: {self.path}")
        try:
            self.session = ort.InferenceSession(os.fspath(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - ORT raises its own types for corrupt / unsupported files
            raise UserError(f"ONNX Runtime cannot load {self.path}: {_first_line(err)}") from None
        self.inputs = self.session.get_inputs()
        meta = self.session.get_modelmeta().custom_metadata_map
        self.info: dict[str, Any] = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def check(self, arrays: list[np.ndarray]) -> None:
        """One line naming the input when its rank or a fixed dimension (channels, size, batch) differs."""
        if len(arrays) != len(self.inputs):
            raise UserError(f"{self.path.name} takes {len(self.inputs)} input(s), got {len(arrays)}")
        for spec, array in zip(self.inputs, arrays):
            if len(spec.shape) != array.ndim:
                raise UserError(f"{self.path.name}: input '{spec.name}' must have shape {_shape(spec.shape)}, "
                                f"got {tuple(array.shape)}")
            for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
                if isinstance(want, int) and want != got:
                    what = "channels" if axis == array.ndim - 3 else f"size of axis {axis}"
                    raise UserError(f"{self.path.name}: input '{spec.name}' needs {want} {what}, got {got} "
                                    f"(shape {tuple(array.shape)}, expected {_shape(spec.shape)})")

    def run(self, *inputs: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        arrays = [np.ascontiguousarray(x.detach().cpu().float().numpy() if torch.is_tensor(x) else x, dtype=np.float32)
                  for x in inputs]
        self.check(arrays)
        values = self.session.run(None, {spec.name: a for spec, a in zip(self.inputs, arrays)})
        return dict(zip(self.output_names, values))

    def placeholder(self, index: int, side: int = 32) -> np.ndarray:
        """Zeros the shape of input ``index`` (a free batch axis: 1, a free side: ``side``): what a graph of several
        inputs is fed for the inputs a call does not use."""
        dims = self.inputs[index].shape
        free = [1 if axis == 0 and len(dims) == 4 else side for axis in range(len(dims))]
        return np.zeros([d if isinstance(d, int) else f for d, f in zip(dims, free)], dtype=np.float32)


def _shape(dims) -> tuple:
    return tuple(d if isinstance(d, int) else str(d) for d in dims)


class OnnxModel(nn.Module):
    """An exported file called like the torch model it came from: ``model(images) -> tensor`` (the output
    named ``output``, default the first). Holds no weights; it runs on the CPU (inputs are moved there)."""

    def __init__(self, runner: OnnxRunner, output: str | None = None) -> None:
        super().__init__()
        self.runner = runner
        self.output = output or runner.output_names[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runner.run(images)[self.output])
