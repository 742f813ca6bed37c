"""The library: ``rv.load(path)`` gives a predictor that takes files and in-memory images and returns what the CLI's
``predict`` writes; bad inputs are one-line errors naming what was given."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_line_error, tiny_overrides
from PIL import Image

import resvision as rv
from resvision.cli import main
from resvision.datasets import read_image
from resvision.errors import UserError

DET = ["train.max_iters=2", "train.progress=false", "train.batch_size=2", "model.box_batch_size_per_image=32",
       "model.rpn_post_nms_top_n_test=50", "model.box_detections_per_img=20", "model.min_size=160",
       "model.max_size=200", "model.backbone.custom.widths=[8,8,16,16]", "model.backbone.custom.layers=[1,1,1,1]"]


@pytest.fixture(scope="module")
def cls_ckpt(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("lib") / "run"
    assert main(["train", "--task", "classification", *tiny_overrides(tiny_folder, out)]) == 0
    return out / "checkpoints/last.pt"


@pytest.fixture(scope="module")
def det_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("lib_det") / "run"
    assert main(["train", "--task", "detection", "--output", str(out), *DET]) == 0
    return out / "checkpoints/last.pt"


def _files(folder, count):
    return sorted(str(p) for p in folder.rglob("*.png"))[:count]


def _without_names(results):
    return [{k: v for k, v in r.items() if k not in ("image", "files")} for r in results]


def _records(written):
    """predictions.json's records less the names of each image's files: what the results' to_dict() holds."""
    return [{k: v for k, v in r.items() if k != "files"} for r in written]


def test_library_equals_cli_and_in_memory_images_equal_their_files(cls_ckpt, tiny_folder, tmp_path):
    files = _files(tiny_folder / "val", 4)
    assert main(["predict", "--checkpoint", str(cls_ckpt), "--output", str(tmp_path / "cli"), *files]) == 0
    cli = json.loads((tmp_path / "cli/predictions.json").read_text())
    predictor = rv.load(cls_ckpt)
    assert predictor.classes and predictor.task.name == "classification"
    results = predictor(files)
    assert [r.to_dict() for r in results] == _records(cli)  # the CLI is a user of the same predictor
    for r, written in zip(results, cli):  # the result objects: attributes of the record, the picture predict saved
        assert (r.label, r.score, r.index) == (r["topk"][0]["label"], r["topk"][0]["prob"], r["topk"][0]["index"])
        assert r.top5 == [(t["label"], t["prob"]) for t in r["topk"]][:5]
        assert r.probs.shape == (len(predictor.classes),) and r.probs.sum() == pytest.approx(1, abs=1e-5)
        assert r.probs.argmax() == r.index and r.probs.max() == pytest.approx(r.score, abs=1e-6)
        assert np.array_equal(r.plot(), np.asarray(Image.open(tmp_path / "cli" / written["files"][0])))
    arrays = [read_image(f) for f in files]
    as_given = [arrays[0], Image.fromarray(arrays[1]), torch.from_numpy(arrays[2].copy()).permute(2, 0, 1).float() / 255,
                torch.from_numpy(arrays[3].copy()).permute(2, 0, 1)]
    results = predictor(as_given)
    assert _without_names(results) == _without_names(cli)
    assert [r["image"] for r in results] == ["<array 0>", "<PIL image 1>", "<tensor 2>", "<tensor 3>"]
    assert predictor(tiny_folder / "val") == predictor(sorted(str(p) for p in (tiny_folder / "val").rglob("*.png")))
    assert np.array_equal(results[0].plot(), predictor([arrays[0]])[0].plot())  # an array's picture is its file's


def test_detection_predictor_on_an_array_equals_its_file(det_ckpt, tmp_path):
    from resvision.datasets.shapes import shapes_dataset

    files = sorted(str(p) for p in (shapes_dataset() / "images" / "val").glob("*.jpg"))[:2]
    assert main(["predict", "--checkpoint", str(det_ckpt), "--output", str(tmp_path / "cli"), "--score-thresh", "0",
                 *files]) == 0
    cli = json.loads((tmp_path / "cli/predictions.json").read_text())
    predictor = rv.load(det_ckpt)
    results = predictor(files, score_thresh=0.0)
    assert [r.to_dict() for r in results] == _records(cli)
    in_memory = predictor([read_image(f) for f in files], score_thresh=0.0)
    assert _without_names(in_memory) == _without_names(cli) and any(r["detections"] for r in cli)
    for r in results:  # the arrays are the records' values, labels index the predictor's classes
        assert r.boxes.shape == (len(r["detections"]), 4) and r.scores.shape == (len(r["detections"]),)
        np.testing.assert_allclose(r.boxes, np.array([d["box"] for d in r["detections"]]).reshape(-1, 4), rtol=1e-6)
        assert [predictor.classes[k] for k in r.labels] == r.names == [d["label"] for d in r["detections"]]
        assert (np.diff(r.scores) <= 0).all()
    written = predictor.write(results, tmp_path / "lib")
    assert sorted(p.name for p in written) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    first = np.asarray(Image.open(tmp_path / "lib" / f"{Path(files[0]).stem}_boxes.png"))
    assert np.array_equal(first, results[0].plot()) and np.array_equal(first, in_memory[0].plot())
    # results of in-memory images are written too, named by their position
    names = sorted(p.name for p in predictor.write(in_memory, tmp_path / "mem"))
    assert names == ["array_0_boxes.png", "array_1_boxes.png", "predictions.json", "results_coco.json"]


def test_train_and_evaluate_in_one_call_each_never_replace_a_runs_report(tiny_folder, tmp_path):
    run = rv.train("classification", tiny_overrides(tiny_folder, tmp_path / "run", "train.epochs=1"))
    assert run.run_dir == tmp_path / "run" and run.report.is_file()
    written = json.loads(run.report.read_text())
    assert run["top1"] == written["top1"] == run.metrics["top1"] and "best_epoch" in written
    report = run.report.read_bytes()
    checkpoint = run.run_dir / "checkpoints/last.pt"
    evaluation = rv.evaluate(checkpoint)  # beside the run, in a new folder, the metrics training measured
    assert evaluation.run_dir.parent == run.run_dir / "eval" and evaluation["top1"] == run["top1"]
    assert json.loads(evaluation.report.read_text())["top1"] == run["top1"]
    again = rv.evaluate(checkpoint)
    assert again.run_dir != evaluation.run_dir and again.metrics == evaluation.metrics
    # the run's own folder, or a folder holding a report, is refused by both the library and the CLI
    for folder in (run.run_dir, evaluation.run_dir):
        one_line_error(UserError, [str(folder), "already holds a run or a report"], rv.evaluate, checkpoint,
                       output=folder)
        assert main(["eval", "--checkpoint", str(checkpoint), "--output", str(folder)]) == 2
    one_line_error(UserError, ["already holds a run or a report"], rv.load(checkpoint).write, [], run.run_dir)
    assert run.report.read_bytes() == report and sorted(p.name for p in (run.run_dir / "eval").iterdir()) == sorted(
        [evaluation.run_dir.name, again.run_dir.name])
    # a Config object with overrides trains like its file
    cfg = rv.load_config("classification", tiny_overrides(tiny_folder, tmp_path / "unused", "train.epochs=1"))
    second = rv.train(cfg, [f"output={tmp_path / 'second'}"])
    assert second.run_dir == tmp_path / "second" and second["top1"] == run["top1"]  # deterministic: same run


def test_grey_rgba_and_16_bit_arrays_are_read_as_their_files_are(cls_ckpt, tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (30, 20), dtype=np.uint8)
    rgba = rng.integers(0, 256, (30, 20, 4), dtype=np.uint8)
    deep = rng.integers(0, 65536, (30, 20), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(deep).save(tmp_path / "deep.png")
    predictor = rv.load(cls_ckpt)
    files = [str(tmp_path / n) for n in ("grey.png", "rgba.png", "deep.png")]
    assert _without_names(predictor([grey, rgba, deep])) == _without_names(predictor(files))


@pytest.mark.parametrize("image, fragment", [
    (np.zeros((8, 8, 3), np.float32), "float32 array of shape (8, 8, 3)"),
    (np.zeros((3, 8, 8), np.uint8), "channels first?"),
    (torch.zeros(8, 8, 3), "channels last?"),
    (torch.full((3, 8, 8), 2.0), "values in [0, 1], got [2, 2]"),
    (torch.full((3, 8, 8), float("nan")), "values in [0, 1]"),
    ([[1, 2], [3, 4]], "got list"),
    (torch.zeros(3, 0, 0), "empty float32 tensor"),
])
def test_bad_in_memory_images_are_one_line_errors(cls_ckpt, image, fragment):
    predictor = rv.load(cls_ckpt)
    one_line_error(UserError, [fragment], predictor, [image])


def test_load_refuses_what_it_cannot_use_in_one_line(cls_ckpt, tmp_path):
    one_line_error(UserError, ["no-such.pt"], rv.load, tmp_path / "no-such.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    one_line_error(UserError, ["notes.pt"], rv.load, tmp_path / "notes.pt")
    predictor = rv.load(cls_ckpt)
    one_line_error(UserError, ["score_thresh", "classification"], predictor, [np.zeros((8, 8, 3), np.uint8)],
                   score_thresh=0.5)
    one_line_error(UserError, ["missing.png"], predictor, tmp_path / "missing.png")
    one_line_error(UserError, ["--task detection", "'classification' model"], rv.load, cls_ckpt, task="detection")
    half = torch.from_numpy(np.full((8, 8, 3), 128, np.uint8)).permute(2, 0, 1).to(torch.bfloat16) / 255
    assert predictor([half])[0]["topk"] == predictor([np.full((8, 8, 3), 128, np.uint8)])[0]["topk"]
    assert not any(p.name != "notes.pt" for p in tmp_path.iterdir())  # nothing written


def test_create_model_builds_what_the_reference_libraries_build():
    import segmentation_models_pytorch as smp
    import torchvision

    def count(module):
        return sum(p.numel() for p in module.parameters())

    classifier = rv.create_model("classification", backbone="resnet18", num_classes=7)
    assert isinstance(classifier.backbone, rv.Backbone)
    assert count(classifier) == count(torchvision.models.resnet18(num_classes=7))
    detector = rv.create_model("detection", backbone="resnet50", num_classes=90)  # + background = COCO's 91
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    assert count(detector) == count(reference)
    segmenter = rv.create_model("segmentation", backbone="resnet50", num_classes=21, decoder="deeplabv3plus")
    assert count(segmenter) == count(smp.DeepLabV3Plus("resnet50", encoder_weights=None, classes=21))
    one_line_error(rv.errors.ConfigError, ["model.dropuot", "model.dropout"], rv.create_model, "classification",
                   num_classes=3, dropuot=0.1)
    one_line_error(rv.errors.ConfigError, ["num_classes"], rv.create_model, "classification")


def test_finetune_controls_on_a_plain_loop():
    """The policy on a model built outside the Trainer, stepped by a plain torch loop (no timm scheduler): the
    frozen stages do not move and the backbone learns at backbone_lr_mult x the head's rate."""
    model = rv.create_model("classification", backbone="resnet18", num_classes=3)
    policy = rv.FinetuneConfig(strategy="partial", frozen_stages=2, backbone_lr_mult=0.1)
    rv.apply_finetune_policy(model.backbone, policy)
    optimizer = rv.build_optimizer(model, model.backbone, policy, rv.OptimConfig(name="momentum", lr=0.5, weight_decay=0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    model.train()
    model(torch.rand(4, 3, 64, 64)).logsumexp(1).mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    after = model.state_dict()
    assert torch.equal(before["backbone.layer2.0.conv1.weight"], after["backbone.layer2.0.conv1.weight"])  # frozen
    for name, rate in (("backbone.layer4.0.conv1.weight", 0.05), ("fc.weight", 0.5)):
        assert torch.allclose(before[name] - after[name], rate * grads[name], atol=1e-7), name
    # a torch scheduler takes each group's starting lr as its base: the per-stage rates survive it
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5).step()
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([0.025, 0.25])
