"""Classification task pieces against independent references: hand-computed metrics,
torchvision's ResNet logits, a hook-based Grad-CAM."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from resvision import build_backbone
from resvision.tasks.classification import ClassificationEvaluator, ImageClassifier, grad_cam
from resvision.tasks.classification.task import ClassificationBatch


def test_evaluator_against_hand_computed_case():
    names = ["a", "b", "c", "d", "e", "f"]
    ev = ClassificationEvaluator(names)
    # Ranked classes per sample (best first); scores decrease along each row.
    ranks = [[0, 1, 2, 3, 4, 5], [2, 1, 0, 3, 4, 5], [5, 4, 3, 2, 1, 0], [1, 0, 2, 3, 4, 5]]
    labels = [0, 1, 0, 1]
    logits = torch.zeros(4, 6)
    for i, r in enumerate(ranks):
        logits[i, r] = torch.arange(6, 0, -1, dtype=torch.float)
    ev.update(logits[:2], (torch.tensor(labels[:2]), torch.tensor([0, 1])))
    ev.update(logits[2:], (torch.tensor(labels[2:]), torch.tensor([2, 3])))
    m = ev.compute()
    assert set(m) == ev.metric_names()  # the names a train.monitor is checked against when a run starts
    # top-1: sample 0 (a) and 3 (b) right -> 2/4. top-5: sample 2 has a at rank 6 -> 3/4.
    assert m["top1"] == 0.5 and m["top5"] == 0.75
    # predictions a, c, f, b for truths a, b, a, b: precision a=1, b=1, c=0, f=0 (d, e undefined -> 0);
    # recall a=1/2, b=1/2; macro over the 6 classes.
    assert m["precision_macro"] == pytest.approx(2 / 6)
    assert m["recall_macro"] == pytest.approx(1 / 6)
    expected = np.zeros((6, 6), int)
    expected[0, 0] = expected[1, 2] = expected[0, 5] = expected[1, 1] = 1
    assert (ev.confusion() == expected).all()


def test_classifier_runs_torchvision_resnet_weights_exactly():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=7).eval()
    ours = ImageClassifier(build_backbone("resnet18"), num_classes=7).eval()
    state = {("" if k.startswith("fc.") else "backbone.") + k: v for k, v in reference.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=0)


def test_grad_cam_matches_hook_based_reference():
    torch.manual_seed(0)
    model = ImageClassifier(build_backbone("resnet20"), num_classes=4).eval()
    x = torch.randn(3, 3, 32, 32)
    cams, classes = grad_cam(model, x)
    # Reference: forward/backward hooks on the last stage, gradients flowing from the input side.
    saved = {}
    layer = model.backbone.layer3
    h1 = layer.register_forward_hook(lambda m, i, o: saved.__setitem__("act", o))
    h2 = layer.register_full_backward_hook(lambda m, gi, go: saved.__setitem__("grad", go[0]))
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    logits.gather(1, classes[:, None]).sum().backward()
    h1.remove(), h2.remove()
    weights = saved["grad"].mean(dim=(2, 3), keepdim=True)
    ref = torch.relu((weights * saved["act"]).sum(1, keepdim=True))
    ref = torch.nn.functional.interpolate(ref, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    ref = ref / ref.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    torch.testing.assert_close(cams, ref.detach(), atol=1e-5, rtol=1e-4)
    assert cams.shape == (3, 32, 32) and float(cams.max()) == pytest.approx(1.0)


def test_mixup_cutmix_train_on_soft_targets(tiny_folder, tmp_path):
    from conftest import tiny_overrides

    from resvision import load_config
    from resvision.tasks import build_task

    cfg = load_config("classification", tiny_overrides(tiny_folder, tmp_path, "data.mixup=0.8", "data.cutmix=1.0",
                                                       "model.label_smoothing=0"))
    task = build_task(cfg)
    data = task.build_datasets()
    train = data.train
    model = task.build_model(data).eval()
    targets = train.dataset.targets
    # labels 0, 1, 2, 1: timm pairs sample i with N-1-i, so every pair mixes two classes
    picks = [targets.index(c) for c in (0, 1, 2)] + [targets.index(1) + 1]
    images = torch.stack([train[i][0] for i in picks])
    labels = torch.tensor([train[i][1] for i in picks])
    torch.manual_seed(0)
    np.random.seed(0)
    loss = task.training_step(model, ClassificationBatch(images.clone(), labels, torch.arange(4)))["ce"]  # mixes in place
    plain = torch.nn.functional.cross_entropy(model(images), labels)
    # Mixed images pair sample i with sample N-1-i: the loss is no longer the plain cross-entropy.
    assert not torch.isclose(loss, plain)
    # Reference: redo the same draw by hand and apply soft-target cross-entropy.
    torch.manual_seed(0)
    np.random.seed(0)
    mixed, soft = task.mixup(images.clone(), labels)
    assert torch.allclose(soft.sum(1), torch.ones(4)) and (soft.max(1).values < 1).all()
    expected = -(soft * model(mixed).log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(loss, expected)


@pytest.mark.slow
def test_default_demo_reaches_98_percent(tmp_path):
    """The README's `make demo` claim: ResNet-20 on the built-in digits, default config, >= 98% top-1
    (a 2-minute run: `make test-slow`, which CI runs after `make test`)."""
    from resvision import Trainer, build_task, load_config

    cfg = load_config("classification", [f"output={tmp_path}/demo", "train.progress=false"])
    metrics = Trainer(build_task(cfg)).fit()
    assert metrics["num_samples"] == 360 and metrics["top1"] >= 0.98

    # the demo checkpoint through ONNX Runtime: the same top-1; INT8's accuracy and speed are printed
    import json

    from resvision.cli import main
    from resvision import export

    info = export(cfg.run_dir / "checkpoints/last.pt", tmp_path / "cls.onnx", quantize="int8")
    assert main(["eval", "--checkpoint", info["path"], "--engine", "onnxruntime", "--output", str(tmp_path / "ort")]) == 0
    assert json.loads((tmp_path / "ort/report.json").read_text())["top1"] == metrics["top1"]
    print("INT8 (demo classifier):", json.dumps(info["int8"]))


@pytest.mark.slow
def test_readme_library_snippets_run_and_train_sensibly(tmp_path, monkeypatch):
    """README "As a library", every snippet as written, in order (in a scratch folder: it writes runs/ and
    predictions/ where it is run)."""
    import re

    from resvision.tasks.heads import unregister_head

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## As a library"):readme.index("## Results")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    try:
        for code in blocks:
            exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    finally:
        unregister_head("classification", "mlp")
    runs = tmp_path / "runs"
    report = json.loads((runs / "classification/resnet32_digits/report.json").read_text())
    assert report["top1"] >= 0.9  # a deeper ResNet on the digits, 5 epochs: not a diverged run
    assert scope["evaluation"]["top1"] == report["top1"]  # the best epoch's weights, evaluated again
    assert scope["evaluation"].run_dir.parent == runs / "classification/resnet32_digits/eval"
    results = scope["results"]  # the file, its pixels and its tensor: one prediction
    assert [r["topk"] for r in results[1:]] == [results[0]["topk"]] * 2 and results[0]["image"].endswith(".png")
    # every task's four calls ran: a report per run (and its evaluation), a picture per prediction
    for task in ("detection", "segmentation", "face"):
        (run,) = [d for d in (runs / task).iterdir() if d.is_dir()]
        assert (run / "report.json").is_file() and len(list((run / "eval").glob("*/report.json"))) == 1
    pictures = sorted(p.name.rsplit("_", 1)[1] for p in (tmp_path / "predictions").iterdir())
    assert pictures == ["boxes.png", "face.png", "label.png", "mask.png", "overlay.png"]
    assert scope["result"].embedding.shape == (128,)  # the last loop pass: face
    assert [tuple(f.shape[1:]) for f in scope["features"].values()] == [(512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
    frozen = [p.requires_grad for p in scope["model"].backbone.parameters()]
    assert not all(frozen) and any(frozen)  # stem and stages 1-2 frozen, the rest trains
    assert {g["lr"] for g in scope["optimizer"].param_groups} >= {1e-3, 1e-4}  # head, and the backbone at 0.1x
    head_report = json.loads((scope["head_run"].run_dir / "report.json").read_text())
    # 2 epochs of a fresh head on 10 digits: learning (chance is 0.1), not a target; its report has Grad-CAM
    assert head_report["top1"] > 0.2 and (scope["head_run"].run_dir / "plots/gradcam.png").is_file()
