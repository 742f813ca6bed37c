"""Joint runs (``task: a+b``): one registry backbone shared by several tasks' heads, trained on each head's own
data, evaluated per head under prefixed keys, loaded and predicted like any checkpoint."""

import json

import numpy as np
import pytest
import torch
import yaml
from conftest import one_line_error

import resvision as rv
from resvision.cli import main
from resvision.engine.checkpoint import load_checkpoint
from resvision.errors import ConfigError

BACKBONE = {"name": "custom", "custom": {"block": "basic", "layers": [1, 1, 1, 1], "widths": [8, 8, 16, 16]}}


@pytest.fixture(scope="module")
def faces(tiny_faces):
    return tiny_faces


def joint_config(tiny_folder, faces, **changes):
    config = {
        "task": "classification+face", "name": "joint", "model": {"backbone": BACKBONE},
        "tasks": {
            "classification": {"data": {"format": "folder", "root": str(tiny_folder), "image_size": 16, "resize": 16},
                               "weight": 1.0},
            "face": {"model": {"embedding_size": 16}, "data": {"root": str(faces), "image_size": 32}, "weight": 0.5},
        },
        "train": {"epochs": 2, "batch_size": 6, "num_workers": 0, "progress": False, "deterministic": True},
        "optim": {"name": "adamw", "lr": 0.01}, "sched": {"name": "constant"},
    }
    for key, value in changes.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def joint_run(tiny_folder, faces, tmp_path_factory):
    folder = tmp_path_factory.mktemp("joint")
    (folder / "joint.yaml").write_text(yaml.safe_dump(joint_config(tiny_folder, faces)))
    assert main(["train", "--config", str(folder / "joint.yaml"), "--output", str(folder / "run")]) == 0
    return folder / "run"


def test_one_backbone_two_heads_train_and_report_per_head(joint_run):
    report = json.loads((joint_run / "report.json").read_text())
    assert {"classification/top1", "face/verif_acc", "face/rank1"} <= set(report)
    assert report["best_classification/top1"] == max(
        r["classification/top1"] for r in map(json.loads, (joint_run / "metrics.jsonl").read_text().splitlines())
        if r["split"] == "val")  # best.pt follows the first head's main metric
    for head, key in (("classification", "top1"), ("face", "verif_acc")):  # each head's single-task report
        assert json.loads((joint_run / head / "report.json").read_text())[key] == report[f"{head}/{key}"]
    assert (joint_run / "classification/confusion_matrix.csv").is_file()
    assert (joint_run / "face/plots/roc.png").is_file()
    losses = [r for r in map(json.loads, (joint_run / "metrics.jsonl").read_text().splitlines())
              if r["split"] == "train_epoch"]
    assert {"classification/ce", "face/ce"} <= set(losses[0])
    # one backbone: the heads' models hold the very same module, trained once, stored once per name
    model = rv.load(joint_run / "checkpoints/last.pt").model
    assert model.heads["classification"].backbone is model.backbone is model.heads["face"].backbone
    state = load_checkpoint(joint_run / "checkpoints/last.pt")["model"]
    for name, tensor in state.items():
        if name.startswith("backbone."):
            for head in ("classification", "face"):
                torch.testing.assert_close(state[f"heads.{head}.{name}"], tensor)


def test_a_joint_checkpoint_evaluates_and_predicts_every_head(joint_run, tiny_folder, faces):
    report = json.loads((joint_run / "report.json").read_text())
    evaluation = rv.evaluate(joint_run / "checkpoints/last.pt")
    assert evaluation["classification/top1"] == report["classification/top1"]
    assert evaluation["face/verif_acc"] == pytest.approx(report["face/verif_acc"], abs=1e-12)
    predictor = rv.load(joint_run / "checkpoints/last.pt")
    image = sorted((tiny_folder / "val").rglob("*.png"))[0]
    (result,) = predictor(image)
    single = result.heads["classification"]
    assert result["classification"]["topk"] == single["topk"] and single.label in ("red", "green", "blue")
    assert np.linalg.norm(result.heads["face"].embedding) == pytest.approx(1, abs=1e-5)
    assert set(result.to_dict()) == {"image", "shared_pass", "classification", "face"} and result["shared_pass"] == []
    picture = result.plot()
    assert picture.shape[1] == sum(r.plot().shape[1] for r in result.heads.values())


def test_one_onnx_file_holds_every_head_and_eval_predict_run_it(joint_run, tiny_folder, tmp_path):
    """export: one file, an input per head, every head's outputs under its prefix, each head parity-checked with its
    own limits; eval and predict with ONNX Runtime on it give the torch model's results."""
    import onnx

    checkpoint = joint_run / "checkpoints/last.pt"
    info = rv.export(checkpoint, tmp_path / "joint.onnx", quiet=True)
    graph = onnx.load(str(tmp_path / "joint.onnx")).graph
    assert [i.name for i in graph.input] == ["classification.images", "face.images"]
    assert [o.name for o in graph.output] == ["classification.logits", "face.embedding", "face.raw_embedding"]
    assert set(info["parity"]["checks"]) == {"classification/max_diff_vs_scale", "face/min_cosine"}
    assert info["parity"]["passed"] and set(info["preprocessing"]) == {"classification", "face"}
    report = json.loads((joint_run / "report.json").read_text())
    evaluation = rv.evaluate(tmp_path / "joint.onnx")
    assert evaluation["classification/top1"] == report["classification/top1"]
    assert evaluation["face/verif_acc"] == pytest.approx(report["face/verif_acc"], abs=0.02)  # float32 reordering
    files = sorted(str(p) for p in (tiny_folder / "val").rglob("*.png"))[:3]
    torch_results, onnx_results = rv.load(checkpoint)(files), rv.load(tmp_path / "joint.onnx")(files)
    for a, b in zip(torch_results, onnx_results):
        assert a["classification"]["topk"][0]["label"] == b["classification"]["topk"][0]["label"]
        assert float(a.heads["face"].embedding @ b.heads["face"].embedding) > 0.9999
    one_line_error(rv.UserError, ["int8", "several inputs"], rv.export, checkpoint, tmp_path / "q.onnx", quantize="int8",
                   quiet=True)
    assert not (tmp_path / "q.onnx").exists()


def test_joint_config_mistakes_are_one_line_errors(tiny_folder, faces, tmp_path):
    def check(fragments, **changes):
        one_line_error(ConfigError, fragments, lambda: rv.build_task(rv.tasks.config_from_dict(
            joint_config(tiny_folder, faces, **changes))))

    base = joint_config(tiny_folder, faces)
    check(["'classification'", "named twice"], task="classification+classification")
    check(["clasification", "did you mean 'classification'"], task="clasification+face")
    check(["tasks", "one entry per head", "classification, face"], tasks={"classification": {}})
    check(["tasks.face", "model.decoder"], tasks={**base["tasks"], "face": {"model": {"decoder": "fpn"}}})
    check(["tasks.face.model.backbone", "model.backbone"], tasks={**base["tasks"], "face": {"model": {"backbone": {}}}})
    check(["tasks.face.weight", "> 0"], tasks={**base["tasks"], "face": {"weight": 0}})
    check(["tasks.face.lr_mult", "> 0"], tasks={**base["tasks"], "face": {"lr_mult": -1}})
    check(["tasks.face.weigth", "valid: model, data, weight, lr_mult"], tasks={**base["tasks"], "face": {"weigth": 2}})
    # a monitor naming no head fails here, not at the first validation; one whose head exists passes this check
    check(["train.monitor", "'face/verif_acc + fcae/verif_acc'", "'fcae/verif_acc' names no head",
           "heads: classification, face"], train={**base["train"], "monitor": "face/verif_acc + fcae/verif_acc"})
    check(["train.monitor", "'top1' names no head"], train={**base["train"], "monitor": "top1"})
    check(["train.monitor", "'0.5 * * face/x' is not a metric name"], train={**base["train"], "monitor": "0.5 * * face/x"})
    rv.build_task(rv.tasks.config_from_dict(joint_config(tiny_folder, faces, train={**base["train"],
                                                                                    "monitor": "0.5*face/verif_acc"})))
    one_line_error(ConfigError, ["tasks:", "task classification has one"], rv.tasks.config_from_dict,
                   {"task": "classification", "tasks": {"classification": {}}})
    assert not any(tmp_path.iterdir())


def test_a_head_extracted_is_a_single_task_checkpoint_and_a_backbone_starts_a_joint_run(joint_run, tiny_folder,
                                                                                         faces, tmp_path, capsys):
    joint = joint_run / "checkpoints/last.pt"
    report = json.loads((joint_run / "report.json").read_text())
    assert main(["extract", "--checkpoint", str(joint), "--head", "classification", "--output",
                 str(tmp_path / "cls.pt")]) == 0
    single = load_checkpoint(tmp_path / "cls.pt")
    assert single["task"] == "classification" and single["config"]["task"] == "classification"
    assert single["metrics"]["top1"] == report["classification/top1"]
    assert rv.evaluate(tmp_path / "cls.pt")["top1"] == report["classification/top1"]  # what the joint run measured
    files = sorted(str(p) for p in (tiny_folder / "val").rglob("*.png"))[:3]
    assert [r.to_dict() for r in rv.load(tmp_path / "cls.pt")(files)] == [
        {"image": r.image, **r["classification"]} for r in rv.load(joint)(files)]
    face = rv.extract_head(joint, "face", tmp_path / "face.pt")
    assert rv.evaluate(face)["verif_acc"] == pytest.approx(report["face/verif_acc"], abs=1e-12)
    # mistakes: one line, exit 2, nothing written
    for argv, fragment in ((["--head", "detection"], "no head 'detection' (its heads: classification, face)"),
                           (["--head", "face", "--output", str(face)], "exists")):
        capsys.readouterr()
        assert main(["extract", "--checkpoint", str(joint), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and fragment in err and "\n" not in err
    one_line_error(rv.UserError, ["single-task 'classification' checkpoint"], rv.extract_head, tmp_path / "cls.pt",
                   "classification", tmp_path / "again.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls.pt", "eval", "face.pt"]  # eval: the two evaluations
    # the other way: a single-task checkpoint's backbone (strictly loaded) starts a joint run
    config = joint_config(tiny_folder, faces, train={"epochs": 1, "max_iters": 1, "batch_size": 6, "num_workers": 0,
                                                     "progress": False})
    config["model"]["backbone"] = {**BACKBONE, "pretrained": str(face)}
    started = rv.build_task(rv.tasks.config_from_dict(config))
    model = started.build_model(started.data_from_meta(load_checkpoint(joint)["meta"]))
    for name, tensor in model.backbone.state_dict().items():
        torch.testing.assert_close(tensor, single["model"][f"backbone.{name}"])


def _write_config(path, tiny_folder, faces, **train):
    config = joint_config(tiny_folder, faces)
    config["train"].update(train)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow  # two torchrun launches and a killed run, ~1 min
def test_a_joint_run_under_torchrun_and_after_kill_9(tiny_folder, faces, tmp_path):
    """torchrun: two processes train the joint model (every parameter used each step: no DDP unused-parameter
    error) and the report equals a 1-process evaluation of last.pt. kill -9 during training, then --resume: the
    same weights as the run that was never killed."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    train = Path(__file__).resolve().parents[1] / "tools/train.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    config = _write_config(tmp_path / "joint.yaml", tiny_folder, faces, batch_size=4)
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(train), "--config", str(config), "--output", str(tmp_path / "ddp")],
                              env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    report = json.loads((tmp_path / "ddp/report.json").read_text())
    again = rv.evaluate(tmp_path / "ddp/checkpoints/last.pt")
    assert again["classification/top1"] == report["classification/top1"]
    assert again["face/verif_acc"] == pytest.approx(report["face/verif_acc"], abs=1e-12)

    config = _write_config(tmp_path / "long.yaml", tiny_folder, faces, epochs=4, checkpoint_every=1)
    command = [sys.executable, str(train), "--config", str(config)]
    assert subprocess.run([*command, "--output", str(tmp_path / "straight")], env=env, capture_output=True,
                          timeout=300).returncode == 0
    victim = subprocess.Popen([*command, "--output", str(tmp_path / "killed")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed/checkpoints/last.pt"
    deadline = time.time() + 240
    while time.time() < deadline and victim.poll() is None:
        if last.is_file() and load_checkpoint(last)["epoch"] >= 1:
            break
        time.sleep(0.2)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert load_checkpoint(last)["epoch"] < 4  # killed before the end
    assert subprocess.run([*command, "--output", str(tmp_path / "killed"), "--resume"], env=env, capture_output=True,
                          timeout=300).returncode == 0
    straight, resumed = (load_checkpoint(tmp_path / d / "checkpoints/last.pt") for d in ("straight", "killed"))
    assert straight["global_step"] == resumed["global_step"]
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name


def test_each_head_learns_at_its_lr_mult_and_the_shared_backbone_at_the_policys_rate(tiny_folder, faces):
    config = joint_config(tiny_folder, faces)
    config["tasks"]["face"]["lr_mult"] = 3.0
    config["finetune"] = {"backbone_lr_mult": 0.5}
    task = rv.build_task(rv.tasks.config_from_dict(config))
    model = task.build_model(task.data_from_meta({"heads": {"classification": {"classes": ["a", "b", "c"]},
                                                            "face": {"classes": [str(i) for i in range(6)]}}}))
    optimizer = rv.build_optimizer(model, model.backbone, task.cfg.finetune, task.cfg.optim, task.head_lr_mults(model))
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert len(lr_of) == len({id(p) for p in model.parameters()})  # every parameter once, the backbone too
    base = task.cfg.optim.lr
    assert {lr_of[id(p)] for p in model.backbone.parameters()} == {0.5 * base}
    assert {lr_of[id(p)] for p in model.heads["face"].parameters() if id(p) not in
            {id(q) for q in model.backbone.parameters()}} == {3 * base}
    assert {lr_of[id(p)] for p in model.heads["classification"].fc.parameters()} == {base}


def test_best_checkpoint_follows_a_weighted_sum_of_head_metrics(tiny_folder, faces, tmp_path):
    from resvision.engine.callbacks import monitored_value

    metrics = {"classification/top1": 0.5, "face/verif_acc": 0.75}
    assert monitored_value("0.5*classification/top1 + 2*face/verif_acc", metrics) == 0.5 * 0.5 + 2 * 0.75
    assert monitored_value("face/verif_acc", metrics) == 0.75
    for bad, fragment in (("2*face/verif_ac", "'face/verif_ac' is not a metric"), ("__import__('os')*2", "not a metric"),
                          ("face/verif_acc + x**2", "'x**2' is not a metric name")):
        one_line_error(rv.UserError, [fragment], monitored_value, bad, metrics)
    # a head's metric misspelt: known before training (every head's evaluator lists its names), nothing written
    typo = _write_config(tmp_path / "typo.yaml", tiny_folder, faces, monitor="0.5*classification/top1 + 2*face/verif_ac")
    with pytest.raises(ConfigError, match=r"'face/verif_ac' is not a metric of this run \(classification/f1_macro, "):
        rv.train(typo, [f"output={tmp_path / 'typo'}"])
    assert not (tmp_path / "typo").exists()
    monitor = "0.5*classification/top1 + 0.5*face/verif_acc"
    config = _write_config(tmp_path / "joint.yaml", tiny_folder, faces, monitor=monitor, epochs=2)
    run = rv.train(config, [f"output={tmp_path / 'run'}"])
    rows = [r for r in map(json.loads, (run.run_dir / "metrics.jsonl").read_text().splitlines()) if r["split"] == "val"]
    sums = [0.5 * r["classification/top1"] + 0.5 * r["face/verif_acc"] for r in rows]
    report = json.loads(run.report.read_text())
    assert report[f"best_{monitor}"] == max(sums) and report["best_epoch"] == 1 + sums.index(max(sums))


def test_a_joint_checkpoint_config_forgets_every_heads_pretrained_weights():
    """Evaluating a joint checkpoint never looks for the weights its run started from (offline, like one task): the
    shared backbone's and each head's ``pretrained`` keys are cleared."""
    from resvision.engine.checkpoint import checkpoint_config
    from resvision.tasks import get_task_class, load_config

    cfg = load_config("detection+segmentation", ["model.backbone.pretrained=/nowhere/backbone.pt",
                                                 "tasks.detection.model.pretrained=/nowhere/detector.pt"])
    state = {"config": cfg.to_dict(), "task": cfg.task, "backbone": cfg.model.backbone.name}
    rebuilt = checkpoint_config(state, "joint.pt", task_class=get_task_class)
    assert rebuilt.model.backbone.pretrained is None
    assert rebuilt.tasks["detection"]["model"]["pretrained"] is None
    assert rebuilt.tasks["detection"]["model"]["fpn_channels"] == 64  # the rest of the head is kept


# ------------------------------------------------------------------ the shared pass (data.same_input)
SHARED_FAST = ["train.max_iters=2", "train.progress=false", "train.batch_size=4", "train.deterministic=true",
               "model.backbone.custom.widths=[8,8,16,16]", "model.backbone.custom.layers=[1,1,1,1]",
               "tasks.detection.model.fpn_channels=16", "tasks.detection.model.representation_size=32",
               "tasks.detection.model.min_size=96", "tasks.detection.model.max_size=128",
               "tasks.segmentation.model.decoder_channels=[16,32]"]


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """The packaged detection+segmentation config (one dataset, one backbone pass per batch), tiny and 2 steps long."""
    out = tmp_path_factory.mktemp("shared") / "run"
    assert main(["train", "--task", "detection+segmentation", "--output", str(out), *SHARED_FAST]) == 0
    return out


def test_heads_sharing_an_input_take_one_backbone_pass_with_each_heads_own_losses(shared_run):
    """One batch of images, boxes and masks; the backbone runs once; the detection losses are the detector's own
    forward's and the segmentation losses its own model's on the same resized, padded images and masks."""
    from resvision.tasks.joint.shared import SharedBatch

    predictor = rv.load(shared_run / "checkpoints/last.pt")
    task, model = predictor.task, predictor.model
    data = task.build_datasets(training=True)
    batch = task.collate_fn()([data.train[k] for k in range(3)])
    assert isinstance(batch, SharedBatch) and batch.images[0] is not None
    assert batch.images[0].shape[-2:] == batch.masks[0].shape  # one image tensor, its mask moved with it
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append(1))
    model.train()
    torch.manual_seed(0)
    losses = model(batch)
    assert len(calls) == 1
    detector, segmenter = model.heads["detection"], model.heads["segmentation"]
    # the segmentation model's input: the detector's (its transform draws a random number: before the seed)
    images, targets = detector.transform(batch.images, [{"boxes": t["boxes"], "labels": t["labels"],
                                                         "masks": m[None]} for t, m in zip(batch.targets, batch.masks)])
    masks = torch.full(images.tensors.shape[:1] + images.tensors.shape[-2:], 255, dtype=torch.long)
    for k, (h, w) in enumerate(images.image_sizes):
        masks[k, :h, :w] = targets[k]["masks"][0]
    torch.manual_seed(0)  # the RPN and RoI samplers, then the decoder's dropout, draw in the same order
    own = detector(batch.images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in batch.targets])
    for key, value in own.items():
        torch.testing.assert_close(losses[f"detection/{key}"], value)
    seg_task = task.heads["segmentation"]
    for key, value in seg_task.losses(*segmenter(images.tensors, aux=True), masks).items():
        torch.testing.assert_close(losses[f"segmentation/{key}"], value)


def test_a_shared_pass_evaluates_and_predicts_as_its_heads_alone(shared_run, tmp_path):
    """The detection metrics of a shared-pass run equal its extracted detection head's, evaluated alone; its masks
    are the segmentation model's whole-image argmax on the detector's input, upsampled to each image; predict gives
    boxes and mask from one pass and draws both in one picture."""
    import torch.nn.functional as F

    report = json.loads((shared_run / "report.json").read_text())
    assert "shared pass" in (shared_run / "segmentation/protocol.md").read_text()
    assert (shared_run / "plots/predictions.png").is_file()
    checkpoint = shared_run / "checkpoints/last.pt"
    alone = rv.evaluate(rv.extract_head(checkpoint, "detection", tmp_path / "det.pt"), output=tmp_path / "det")
    for key in ("bbox_AP", "bbox_AP50", "voc07_mAP50"):
        assert alone[key] == report[f"detection/{key}"]
    predictor = rv.load(checkpoint)
    image = predictor.task.build_datasets(training=False).val.samples[0].image_path
    (result,) = predictor(image)
    assert result["shared_pass"] == ["detection", "segmentation"]
    single = rv.load(tmp_path / "det.pt")(image)[0]
    np.testing.assert_array_equal(result.heads["detection"].boxes, single.boxes)
    detector, segmenter = predictor.model.heads["detection"], predictor.model.heads["segmentation"]
    rgb = np.asarray(rv.datasets.as_rgb(image))
    tensor = torch.tensor(rgb).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        inputs, _ = detector.transform([tensor])
        h, w = inputs.image_sizes[0]
        logits = segmenter(inputs.tensors)[..., :h, :w]
        expected = F.interpolate(logits, size=rgb.shape[:2], mode="bilinear", align_corners=False).argmax(1)[0]
    np.testing.assert_array_equal(result.heads["segmentation"].mask, expected.numpy())
    picture = result.plot()
    assert picture.shape == result.heads["detection"].plot().shape  # the boxes' picture, with the mask under them
    if result.heads["segmentation"].mask.any():
        assert not np.array_equal(picture, result.heads["detection"].plot())


def test_same_input_refuses_a_head_that_reads_its_own_inputs_and_an_image_without_a_mask(tiny_folder, faces,
                                                                                         tmp_path):
    from resvision.datasets.shapes import load_shapes, load_shapes_segmentation
    from resvision.tasks.joint.shared import pair_by_image

    one_line_error(ConfigError, ["data.same_input", "face", "detection, segmentation"],
                   lambda: rv.build_task(rv.tasks.config_from_dict(
                       joint_config(tiny_folder, faces, data={"same_input": True}))))
    assert not any(tmp_path.iterdir())
    boxes, masks = load_shapes("val"), load_shapes_segmentation("val")
    assert pair_by_image(boxes, masks, "val") == list(range(len(boxes.samples)))  # the same scenes, in order
    masks.samples = masks.samples[::-1]  # another order: paired by name, not position
    assert pair_by_image(boxes, masks, "val") == list(range(len(boxes.samples)))[::-1]
    masks.samples = masks.samples[:-1]  # the first image's mask missing
    one_line_error(ConfigError, ["data.same_input", "000300.jpg", "no mask named '000300'", "segmentation val"],
                   pair_by_image, boxes, masks, "val")


@pytest.mark.slow  # export, parity and ONNX Runtime evaluation of 100 images, ~20 s (keeps make test near 6 min)
def test_a_shared_pass_exports_to_one_graph_of_one_input(shared_run, tmp_path):
    """export: one image in, every head's outputs out, each head parity-checked with its own limits; eval and
    predict with ONNX Runtime give the torch model's results."""
    import onnx

    checkpoint = shared_run / "checkpoints/last.pt"
    info = rv.export(checkpoint, tmp_path / "shared.onnx", quiet=True)
    graph = onnx.load(str(tmp_path / "shared.onnx")).graph
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == ["detection.boxes", "detection.labels", "detection.scores",
                                              "segmentation.logits"]
    assert {"detection/max_box_diff_px", "segmentation/argmax_agreement"} <= set(info["parity"]["checks"])
    assert info["parity"]["passed"] and info["preprocessing"]["shared_pass"] == ["detection", "segmentation"]
    report = json.loads((shared_run / "report.json").read_text())
    evaluation = rv.evaluate(tmp_path / "shared.onnx", output=tmp_path / "eval")
    assert evaluation["detection/bbox_AP50"] == pytest.approx(report["detection/bbox_AP50"], abs=0.01)
    assert evaluation["segmentation/mIoU"] == pytest.approx(report["segmentation/mIoU"], abs=0.01)
    for name in ("detection/plots/predictions.png", "segmentation/report.json", "plots/predictions.png"):
        assert (tmp_path / "eval" / name).is_file()  # every head's report, as the torch model's evaluation writes
    image = rv.load(checkpoint).task.build_datasets(training=False).val.samples[1].image_path
    (a,), (b,) = rv.load(checkpoint)(image), rv.load(tmp_path / "shared.onnx")(image)
    assert b["shared_pass"] == ["detection", "segmentation"]
    assert a.heads["detection"].names == b.heads["detection"].names
    np.testing.assert_allclose(a.heads["detection"].boxes, b.heads["detection"].boxes, atol=0.5)
    assert (a.heads["segmentation"].mask == b.heads["segmentation"].mask).mean() > 0.999


@pytest.mark.slow  # export, INT8 calibration and three ONNX Runtime evaluations, ~15 s (keeps make test near 6 min)
def test_a_shared_pass_quantizes_to_int8_within_each_heads_own_scopes(shared_run, tmp_path):
    """export --quantize int8 of the shared pass: the backbone, the detector's FPN, RPN head and box head and the whole
    segmentation head run in INT8, the detector's class and box predictors stay float32 (detection's own choice);
    both heads' metrics are reported for both files, and the INT8 file evaluates and predicts as one pass."""
    import onnx
    from resvision.tasks.joint.shared import SHARED_INT8_SCOPES

    info = rv.export(shared_run / "checkpoints/last.pt", tmp_path / "shared.onnx", parity_images=2, quantize="int8",
                     calibration_images=4, quiet=True)
    q = info["int8"]
    assert tuple(q["scopes"]) == SHARED_INT8_SCOPES and q["calibration_images"] == 4
    graph = onnx.load(q["path"]).graph
    producer = {out: node for node in graph.node for out in node.output}
    weighted = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    quantized = {n.name: getattr(producer.get(n.input[1]), "op_type", None) == "DequantizeLinear" for n in weighted}
    assert {n.split("/")[1] for n, done in quantized.items() if done} == {"backbone", "fpn", "rpn", "roi_heads",
                                                                          "decoder", "head"}
    assert {n.rsplit("/", 2)[-2] for n, done in quantized.items() if not done} == {"cls_score", "bbox_pred"}
    assert set(q["fp32"]) == set(q["int8"]) == {"detection/bbox_AP", "detection/bbox_AP50", "segmentation/mIoU"}
    evaluation = rv.evaluate(q["path"], output=tmp_path / "eval")
    for key, value in q["int8"].items():
        assert evaluation[key] == pytest.approx(value, abs=1e-12)
    image = rv.load(q["path"]).task.build_datasets(training=False).val.samples[0].image_path
    (result,) = rv.load(q["path"])(image)
    assert result["shared_pass"] == ["detection", "segmentation"]
    assert result.heads["segmentation"].mask.shape == np.asarray(rv.datasets.as_rgb(image)).shape[:2]


@pytest.mark.slow  # one torchrun launch of two processes, ~40 s
def test_a_shared_pass_under_torchrun(tmp_path):
    """torchrun: two processes train the shared pass (every parameter of both heads used each step: no DDP
    unused-parameter error) and the report equals a 1-process evaluation of last.pt."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    train = Path(__file__).resolve().parents[1] / "tools/train.py"
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(train), "--task", "detection+segmentation", "--output", str(tmp_path / "ddp"),
                               *SHARED_FAST], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                              text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    report = json.loads((tmp_path / "ddp/report.json").read_text())
    again = rv.evaluate(tmp_path / "ddp/checkpoints/last.pt")
    for key in ("detection/bbox_AP50", "detection/bbox_AP", "segmentation/mIoU"):
        assert again[key] == pytest.approx(report[key], abs=1e-9), key


@pytest.mark.slow  # the packaged detection+segmentation demo, ~7 minutes on 2 cores
def test_default_detection_segmentation_run_reaches_its_promise(tmp_path):
    """`tools/train.py --task detection+segmentation` (one backbone pass per batch) at 2 threads, the default seed:
    bbox_AP50 >= 0.65 and mIoU >= PROMISED_MIOU, issue 19's targets (README "Results")."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["train", "--task", "detection+segmentation", "--output", str(tmp_path / "run"),
                     "train.progress=false"]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "run/report.json").read_text())
    assert report["detection/bbox_AP50"] >= 0.65 and report["segmentation/mIoU"] >= PROMISED_MIOU, report
    assert (tmp_path / "run/plots/predictions.png").is_file()


PROMISED_MIOU = 0.80  # issue 19's target; every measured run reached it (0.816-0.872), the default seed 0.838
