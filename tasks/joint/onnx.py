"""Export of a joint run: one ONNX file holding every head, with one input per head (``<head>.images``) and every
head's outputs under its prefix (``classification.logits``, ``face.embedding``, ...), each head's part checked with
that head's own parity limits; and the file run by ONNX Runtime the way the joint task calls its torch model.

A shared-pass run (``data.same_input``) exports its one pass instead: one ``images`` input (one ``(3, H, W)`` image,
as detection's graph), outputs ``detection.boxes`` / ``labels`` / ``scores`` and ``segmentation.logits`` at the
image's size (``shared.SharedExportModule``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .shared import SHARED_INT8_SCOPES, SharedExportModule, SharedOnnx

if TYPE_CHECKING:
    from ...deploy.runtime import OnnxRunner

__all__ = ["HeadRunner", "JointExport", "JointExportModule", "JointOnnx"]


class JointExportModule(nn.Module):
    """``(head 1's inputs, head 2's inputs, ...) -> (head 1's outputs, head 2's outputs, ...)``: each head's own
    export module on its own inputs (the shared backbone runs once per head)."""

    def __init__(self, modules: dict[str, nn.Module], arity: dict[str, int]) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        self.arity = arity

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs: list[torch.Tensor] = []
        start = 0
        for name, module in self.parts.items():
            out = module(*inputs[start:start + self.arity[name]])
            start += self.arity[name]
            outputs += list(out) if isinstance(out, (tuple, list)) else [out]
        return tuple(outputs)


class HeadRunner:
    """One head's view of a joint file: its inputs fed, the others given placeholders, its outputs without the
    prefix, its own preprocessing as ``info["preprocessing"]``; what the head's ``onnx_model`` takes as a runner."""

    def __init__(self, runner: OnnxRunner, head: str) -> None:
        self.runner, self.head = runner, head
        prefix = f"{head}."
        self.mine = [i for i, spec in enumerate(runner.inputs) if spec.name.startswith(prefix)]
        self.inputs = [runner.inputs[i] for i in self.mine]
        self.output_names = [n[len(prefix):] for n in runner.output_names if n.startswith(prefix)]
        self.info = {**runner.info, "preprocessing": runner.info.get("preprocessing", {}).get(head, {})}

    def run(self, *inputs: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        given = dict(zip(self.mine, inputs))
        feed = [given[i] if i in given else self.runner.placeholder(i) for i in range(len(self.runner.inputs))]
        prefix = f"{self.head}."
        return {k[len(prefix):]: v for k, v in self.runner.run(*feed).items() if k.startswith(prefix)}


class JointOnnx(nn.Module):
    """A joint file called like :class:`~resvision.tasks.joint.task.JointModel` at evaluation and prediction:
    ``heads[name]`` is that head's own ONNX Runtime module over its part of the file."""

    def __init__(self, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(heads)


class JointExport:
    """The export members of :class:`~resvision.tasks.joint.task.JointTask` (each head's, prefixed; the shared pass's
    when ``same_input``)."""

    onnx_postprocess = ("none",)
    same_input = False

    @property
    def onnx_int8(self) -> bool:
        return self.same_input  # a graph of several inputs: not built (one calibration input per graph)

    @property
    def int8_scopes(self) -> tuple[str, ...]:
        # the shared pass calls the heads' parts directly, so the exporter names nodes after those parts: detection's
        # own choice (backbone, FPN, RPN head, box head; its class and box predictors stay float32) and the
        # segmentation decoder and head (the final upsampling to the image stays float32)
        return SHARED_INT8_SCOPES if self.same_input else ()

    @property
    def int8_metrics(self) -> tuple[str, ...]:
        return tuple(f"{n}/{k}" for n, t in self.heads.items() for k in t.int8_metrics)

    @property
    def onnx_batched(self) -> bool:
        return not self.same_input  # the shared pass's graph takes one image, as detection's

    # every name prefixed by its head, the free axes' too: ONNX Runtime holds axes of one name to one size
    def onnx_inputs(self, dynamic_batch: bool = True) -> dict[str, dict[int, str]]:
        if self.same_input:
            return {"images": {1: "height", 2: "width"}}
        return {f"{n}.{k}": {a: f"{n}.{v}" for a, v in axes.items()}
                for n, t in self.heads.items() for k, axes in t.onnx_inputs(dynamic_batch).items()}

    def onnx_outputs(self, postprocess: str = "none", dynamic_batch: bool = True) -> dict[str, dict[int, str]]:
        if self.same_input:
            return {"detection.boxes": {0: "detections"}, "detection.labels": {0: "detections"},
                    "detection.scores": {0: "detections"}, "segmentation.logits": {2: "height", 3: "width"}}
        return {f"{n}.{k}": {a: f"{n}.{v}" for a, v in axes.items()}
                for n, t in self.heads.items() for k, axes in t.onnx_outputs("none", dynamic_batch).items()}

    def onnx_output_names(self, postprocess: str = "none") -> tuple[str, ...]:
        if self.same_input:
            return tuple(self.onnx_outputs())
        return tuple(f"{n}.{k}" for n, t in self.heads.items() for k in t.onnx_output_names("none"))

    @property
    def onnx_parity_limits(self) -> dict[str, tuple[str, float]]:
        return {f"{n}/{k}": limit for n, t in self.heads.items() for k, limit in t.onnx_parity_limits.items()}

    def export_module(self, model: nn.Module, postprocess: str = "none") -> nn.Module:
        if self.same_input:
            return SharedExportModule(model)
        return JointExportModule({n: t.export_module(model.heads[n], "none") for n, t in self.heads.items()},
                                 {n: len(t.onnx_inputs()) for n, t in self.heads.items()})

    def export_examples(self, batch: Any, model: nn.Module) -> list[tuple[torch.Tensor, ...]]:
        """One argument tuple per head example, zipped across the heads: a batch that lacks a head gives none (the
        shared pass: one tuple per image)."""
        if self.same_input:
            return [(image,) for image in batch.images]
        if set(batch.heads) != set(self.heads):
            return []
        per_head = [t.export_examples(batch.heads[n], model.heads[n]) for n, t in self.heads.items()]
        return [tuple(a for args in combo for a in args) for combo in zip(*per_head)]

    def example_images(self, args: tuple[torch.Tensor, ...]) -> int:
        if self.same_input:
            return 1
        first = next(iter(self.heads.values()))
        return first.example_images(args[:len(first.onnx_inputs())])

    def parity(self, reference: dict[str, torch.Tensor], exported: dict[str, torch.Tensor]) -> dict[str, float]:
        figures = {}
        for name, task in self.heads.items():
            prefix = f"{name}."
            own = [{k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)} for d in (reference, exported)]
            figures.update({f"{name}/{k}": v for k, v in task.parity(*own).items()})
        return figures

    def preprocessing(self, model: nn.Module) -> dict[str, Any]:
        if self.same_input:
            detection = self.heads["detection"].preprocessing(model.heads["detection"])
            return {**detection, "outputs": "detection.boxes (x1, y1, x2, y2 pixels of the input), detection.labels "
                                            "(1-based class index), detection.scores; segmentation.logits (1, C, H, W) "
                                            "at the input's size", "shared_pass": list(self.heads)}
        return {n: t.preprocessing(model.heads[n]) for n, t in self.heads.items()}

    def set_export_size(self, size: tuple[int, int]) -> None:
        for task in self.heads.values():
            task.set_export_size(size)

    def onnx_model(self, runner: OnnxRunner) -> nn.Module:
        if self.same_input:
            return SharedOnnx(runner)
        return JointOnnx({n: t.onnx_model(HeadRunner(runner, n)) for n, t in self.heads.items()})
