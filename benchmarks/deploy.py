"""Deploy benchmarks for ``tools/benchmark.py`` (``--only deploy``): the engines a trained model can run on.

1. ResNet-50 classification, batch 16, 224 px, fp32: eager torch, channels_last, torch.compile, ONNX Runtime
   fp32 and ONNX Runtime INT8 (static QDQ, per-channel, calibrated on real photos) in one alternation, each
   against the first and against this machine's 2048² fp32 matmul rate.
2. Batch-1 latency (p50 / p95 ms) of the same engines: what a service answering one image at a time sees.
3. Faster R-CNN R50-FPN (our detector: registry ResNet-50 + torchvision's FPN / RPN / RoI heads) on a real
   photo at 800x1333 and at the demo size: ONNX Runtime ÷ eager torch, and ONNX Runtime's own profile by
   operator type (where its time goes: convolutions vs RoIAlign / NMS / the rest).

The files are exported and quantized exactly as ``tools/export.py`` does (``deploy.export.export_to_onnx``,
``deploy.quantize``'s settings); the models have random weights, which cost the same per image as trained
ones (detections after NMS are capped by ``box_detections_per_img`` in both engines alike).
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from resvision.benchmarks.measure import alone, alternate, compare, matmul_window, try_compile


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _photos(count: int, size: tuple[int, int]) -> torch.Tensor:
    """``(count, 3, H, W)`` float images in [0, 1] cut from scikit-image's bundled colour photos."""
    import skimage.data
    import torch.nn.functional as F

    names = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina", "hubble_deep_field")
    out = []
    for i in range(count):
        pixels = torch.from_numpy(getattr(skimage.data, names[i % len(names)])()).permute(2, 0, 1).float() / 255
        h, w = pixels.shape[1:]
        crop = pixels[:, (i * 7) % (h // 4):, (i * 13) % (w // 4):]
        out.append(F.interpolate(crop[None], size=size, mode="bilinear", align_corners=False)[0])
    return torch.stack(out)


def _normalised_photos(count: int) -> torch.Tensor:
    """``(count, 3, 224, 224)`` ImageNet-normalised photos: the classification section's inputs."""
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return ((_photos(count, (224, 224)) - mean) / std).contiguous()


def eager_alone_rate(batch: int, windows: int) -> float:
    """Median img/s of the section's eager ResNet-50 on its photos, with nothing else in the process: run in a fresh
    process (``measure.alone``) it checks the eager figure of the alternation, as a user would see it."""
    from resvision.backbone import build_backbone
    from resvision.tasks.classification import ImageClassifier

    torch.manual_seed(0)
    model = ImageClassifier(build_backbone("resnet50"), 1000).eval()
    x, rates = _normalised_photos(batch), []
    with torch.inference_mode():
        model(x)
        for _ in range(windows):
            start = time.perf_counter()
            model(x)
            rates.append(batch / (time.perf_counter() - start))
    return statistics.median(rates)


# glibc returns freed blocks above its mmap threshold (at most 32 MB; ResNet-50's batch-16 activations reach 51 MB)
# to the system, so each eager forward pass page-faults its activations anew; these settings keep freed memory
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000"}


class _Task:
    """The two ``task`` members ``export_to_onnx`` reads, for a bare model outside any run."""

    def __init__(self, outputs, batched=True, dynamic=None):
        self.outputs, self.onnx_batched, self.onnx_dynamic_axes = outputs, batched, dynamic or {}

    def onnx_output_names(self, postprocess="none"):
        return self.outputs


def _latency(fns: dict, calls: int, rounds: int) -> dict[str, list[float]]:
    """Per-call milliseconds of each engine, ``calls`` per block, blocks alternated ``rounds`` times."""
    times: dict[str, list[float]] = defaultdict(list)
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def bench_classification(s, tmp: Path) -> list[str]:
    from torch.utils.flop_counter import FlopCounterMode

    from resvision.backbone import build_backbone
    from resvision.deploy import OnnxRunner
    from resvision.deploy.export import export_to_onnx
    from resvision.deploy.quantize import static_int8
    from resvision.tasks.classification import ImageClassifier

    batch, n, mms = 16, 2048, s.pick(10, 5)
    torch.manual_seed(0)
    model = ImageClassifier(build_backbone("resnet50"), 1000).eval()
    photos = _normalised_photos(batch + s.pick(32, 8))
    x, calibration = photos[:batch].contiguous(), photos[batch:]
    _log("[deploy] eager ResNet-50 alone in a fresh process (the check on the alternation's eager figure)")
    code = f"from resvision.benchmarks.deploy import eager_alone_rate; print(eager_alone_rate({batch}, {s.windows}))"
    eager_alone = alone(code)
    eager_kept = alone(code, env=KEEP_FREED_MEMORY)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x[:1])
    flops = counter.get_total_flops()
    fp32, int8 = tmp / "resnet50.onnx", tmp / "resnet50.int8.onnx"
    export_to_onnx(model, (x,), fp32, _Task(("logits",)))
    static_int8(fp32, int8, [calibration[i:i + 8].numpy() for i in range(0, len(calibration), 8)])
    ort32, ort8 = OnnxRunner(fp32), OnnxRunner(int8)
    with torch.inference_mode():
        reference = model(x)
    delta32 = float(np.abs(ort32.run(x)["logits"] - reference.numpy()).max())
    agree8 = float((ort8.run(x)["logits"].argmax(1) == reference.argmax(1).numpy()).mean())
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def torch_fn(m, inputs):
        def run():
            with torch.inference_mode():
                m(inputs)
        return run

    engines = {"eager": torch_fn(model, x), "channels_last": torch_fn(model_cl, x_cl)}
    compiled, compile_note = None, "torch.compile: skipped under --quick (compiling takes over a minute on 2 cores)."
    if not s.quick:
        compiled, compile_note = try_compile(model, x)
    if compiled is not None:
        engines["torch.compile"] = torch_fn(compiled, x)
    engines.update({"onnxruntime fp32": lambda: ort32.run(x), "onnxruntime int8": lambda: ort8.run(x)})
    def per_batch(fn):
        def window():
            fn()
            return batch
        return window

    _log(f"[deploy] resnet50 224x224 batch {batch}")
    rates = alternate({**{k: per_batch(f) for k, f in engines.items()}, "fp32 matmul": matmul_window(n, mms)},
                      s.windows, log=_log)
    peak = statistics.median(rates["fp32 matmul"])
    med = {k: statistics.median(rates[k]) for k in engines}
    targets = {"onnxruntime fp32": {"eager": 1.5, "channels_last": 1.15, "torch.compile": 1.05}}
    lines = ["| engine | img/s (median) | fraction of matmul rate | ÷ eager | ÷ channels_last | ÷ torch.compile | windows |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in engines:
        cells = [compare(rates, name, other).cell(targets.get(name, {}).get(other))
                 if other in med and other != name else "–" for other in ("eager", "channels_last", "torch.compile")]
        lines.append(f"| {name} | {med[name]:.2f} | {med[name] * flops / peak:.3f} | {' | '.join(cells)} | "
                     f"{len(rates[name])} |")
    int8 = compare(rates, "onnxruntime int8", "onnxruntime fp32")
    lines.append(f"| fp32 `torch.mm` {n}x{n} (reference) | – | 1 | – | – | – | {len(rates['fp32 matmul'])} |")

    _log("[deploy] batch-1 latency")
    one, one_cl = x[:1].contiguous(), x_cl[:1]
    single = {"eager": torch_fn(model, one), "channels_last": torch_fn(model_cl, one_cl),
              "onnxruntime fp32": lambda: ort32.run(one), "onnxruntime int8": lambda: ort8.run(one)}
    if compiled is not None:
        single["torch.compile"] = torch_fn(compiled, one)  # a new input shape: recompiles in the warm-up call
    times = _latency(single, s.pick(10, 3), s.pick(4, 1))
    latency = ["| engine (batch 1) | p50 ms | p95 ms | calls |", "|---|---:|---:|---:|"]
    for name, values in times.items():
        latency.append(f"| {name} | {np.percentile(values, 50):.1f} | {np.percentile(values, 95):.1f} | {len(values)} |")
    return [
        "## Deploy: ResNet-50 on each inference engine", "",
        f"`ImageClassifier(build_backbone(\"resnet50\"), 1000)` (random weights) in eval mode, batch {batch} at 224x224 "
        f"of real photos (crops of scikit-image's bundled images, ImageNet-normalised), fp32, {flops / 1e9:.2f} GFLOP "
        "per image. torch engines run under `torch.inference_mode()`; `channels_last` converts model and input. ONNX "
        "Runtime runs the file `deploy.export.export_to_onnx` writes (opset 17, dynamic batch) with all graph "
        "optimisations, intra-op threads = torch's; INT8 is ONNX Runtime static quantization (QDQ, per-channel int8 "
        f"weights, uint8 activations, MinMax calibration on {len(calibration)} other photos), as `tools/export.py "
        f"--quantize int8` does. ONNX Runtime fp32 logits vs torch: max |Δ| {delta32:.1e}; INT8 top-1 agrees with "
        f"fp32 torch on {agree8:.0%} of the {batch} photos (random weights: the accuracy of INT8 on trained models is "
        "measured by the export itself, see README → Deploy). All engines and the matmul reference alternate in one "
        "run.", "", *lines, "",
        f"INT8 ÷ ONNX Runtime fp32: {int8.cell(2.0)}.", "",
        f"Eager alone: the same model and photos in a fresh process with nothing else in it ran at {eager_alone:.2f} "
        f"img/s; the alternation's eager figure is {med['eager'] / eager_alone:.2f}x that "
        f"({'agrees within 15 %' if abs(med['eager'] / eager_alone - 1) <= 0.15 else '**disagrees by more than 15 %**'}"
        "). Each ratio cell: ratio of the medians, then the range of the per-round ratios; `noisy` marks a ratio whose "
        "rounds disagree by more than ±10 % (not to be quoted as a result).", "",
        f"**The allocator moves eager torch more than any engine choice.** The same fresh process with glibc told to "
        f"keep freed memory (`{' '.join(f'{k}={v}' for k, v in KEEP_FREED_MEMORY.items())}`) ran eager at "
        f"{eager_kept:.2f} img/s, {eager_kept / eager_alone:.2f}x the default: glibc hands blocks above its mmap "
        "threshold (32 MB at most; this model's batch-16 activations reach 51 MB) back to the system, so every forward "
        "pass page-faults them anew. A process whose allocation history left such memory in its heap runs faster, which "
        "is why eager rates differed between benchmark sections sharing one process (13 vs 20 img/s here) and between "
        "runs; every section now runs in a fresh process, and ONNX Runtime, with its own memory arena, is not "
        "affected. On a CPU server, jemalloc / tcmalloc (`LD_PRELOAD`) or the two settings above are worth measuring "
        "for eager torch.", "",
        compile_note, "", *latency, ""]


def _ort_profile(path: Path, image: torch.Tensor, runs: int) -> list[tuple[str, float]]:
    """ONNX Runtime's own per-node profile of ``runs`` calls, summed by operator type: ``[(op, share)]``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_name("profile"))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: image.numpy()}
    for _ in range(runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
    total = sum(by_op.values())
    return sorted(((op, t / total) for op, t in by_op.items()), key=lambda item: -item[1])


def bench_detection(s, tmp: Path) -> list[str]:
    from resvision.backbone import build_backbone
    from resvision.deploy import OnnxRunner
    from resvision.deploy.export import export_to_onnx
    from resvision.tasks.detection.model import DetectorSettings, build_faster_rcnn
    from resvision.tasks.detection.onnx import OneImageDetector

    rows, profiles = [], []
    cases = [("800x1333 (torchvision default)", 800, 1333, (800, 1199)), ("demo size (min 160 / max 240)", 160, 240, (150, 200))]
    for label, min_size, max_size, size in cases[s.pick(0, 1):]:
        torch.manual_seed(0)
        body = build_backbone("resnet50", out_features=["c2", "c3", "c4", "c5"])
        model = build_faster_rcnn(body, 4, DetectorSettings(min_size=min_size, max_size=max_size)).eval()
        module = OneImageDetector(model).eval()
        image = _photos(1, size)[0]
        path = tmp / f"frcnn_{min_size}.onnx"
        export_to_onnx(module, (image,), path, _Task(("boxes", "labels", "scores"), batched=False,
                                                      dynamic={1: "height", 2: "width"}))
        runners = {level: OnnxRunner(path, optimization=level) for level in ("all", "basic")}

        def torch_run(m=module, x=image):
            with torch.inference_mode():
                m(x)
            return 1

        variants = {"eager": torch_run}
        for level, runner in runners.items():
            variants[f"onnxruntime ({level})"] = lambda r=runner, x=image: (r.run(x), 1)[1]
        _log(f"[deploy] Faster R-CNN R50-FPN {label}")
        rates = alternate(variants, s.pick(5, 1), log=_log)
        eager = statistics.median(rates["eager"])
        for name in variants:
            med = statistics.median(rates[name])
            rows.append(f"| {label}, input {size[0]}x{size[1]} | {name} | {med:.3f} | **{med / eager:.3f}** | "
                        f"{len(rates[name])} |")
        share = _ort_profile(path, image, s.pick(3, 1))
        conv = sum(v for op, v in share if op in ("Conv", "FusedConv"))
        top = ", ".join(f"{op} {v:.0%}" for op, v in share[:6])
        profiles.append(f"- {label}: convolutions {conv:.0%} of ONNX Runtime's kernel time; by operator: {top}")
    return [
        "## Deploy: Faster R-CNN R50-FPN, ONNX Runtime vs eager torch", "",
        "Our detector (`build_faster_rcnn` on the registry ResNet-50, c2–c5 + FPN, torchvision's RPN / RoI heads; "
        "random weights) on one real photo per call, exported as `tools/export.py` does (`OneImageDetector`, "
        "TorchScript exporter, opset 17, dynamic height / width). ONNX Runtime at two graph optimisation levels "
        "(`all`: layout and fusion passes; `basic`: constant folding and redundant-node removal only).", "",
        "| case | engine | img/s (median) | ÷ eager | windows |", "|---|---|---:|---:|---:|", *rows, "",
        "Where ONNX Runtime's time goes (its own profiler, `SessionOptions.enable_profiling`, optimisation `all`):", "",
        *profiles]


def bench_deploy(s) -> list[str]:
    """``s``: the tool's Settings (``pick``, ``windows``, ``command``)."""
    with tempfile.TemporaryDirectory(prefix="resvision-bench-deploy-") as tmp:
        lines = bench_classification(s, Path(tmp))
        lines += ["", *bench_detection(s, Path(tmp))]
    return lines + ["", f"Command: `{s.command} --only deploy`"]
