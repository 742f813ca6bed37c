"""The task contract: a task defined here, unknown to cli.py and the Trainer, goes through train /
eval / predict / eval --predictions on the command line; eval and predict from checkpoints."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn

from resvision.backbone import build_backbone_from_config
from resvision.cli import main
from resvision.config import BackboneConfig
from resvision.datasets import read_image
from resvision.errors import DataError
from resvision.tasks import DataInfo, Evaluator, Task, TaskOption, register_task, unregister_task

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ a toy task: mean brightness regression
@dataclass
class ToyModelConfig:
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="resnet20"))


@dataclass
class ToyDataConfig:
    root: str = ""


class Regressor(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_specs[-1].channels, 1)

    def forward(self, x):
        return self.head(list(self.backbone(x).values())[-1].mean((2, 3)))[:, 0]


class MaeEvaluator(Evaluator):
    state_fields = ("errors",)

    def update(self, predictions, targets):
        self.errors.extend((predictions - targets).abs().cpu().tolist())

    def compute(self):
        return {"mae": float(np.mean(self.errors)), "num_samples": float(len(self.errors))}


def _tensor(path):
    return torch.from_numpy(np.array(read_image(path))).permute(2, 0, 1).float() / 255


class MinimalToyTask(Task):
    """The required members only: config schema, data, model, loss, evaluation (counted below)."""

    name = "toy_minimal"
    ModelConfig = ToyModelConfig
    DataConfig = ToyDataConfig

    def build_datasets(self, training=True):
        paths = sorted(str(p) for p in Path(self.cfg.data.root).glob("*.png"))
        items = [(_tensor(p), _tensor(p).mean()) for p in paths]
        return DataInfo(items[:12], items[12:], classes=["brightness"])

    def build_model(self, data):
        return Regressor(build_backbone_from_config(self.cfg.model.backbone))

    def training_step(self, model, batch):
        x, y = batch
        return {"mse": F.mse_loss(model(x), y)}

    def evaluation_step(self, model, batch):
        x, y = batch
        return model(x), y

    def build_evaluator(self, data):
        return MaeEvaluator()


class ToyTask(MinimalToyTask):
    """The optional parts too: help text, the metric that picks best.pt, prediction, scoring a results file."""

    name = "toy_brightness"
    description = "toy: mean brightness of an image"
    main_metric = "mae"
    main_metric_mode = "min"
    predict_options = (TaskOption("scale", float, "toy_brightness: multiply the predictions"),)
    results_format = "JSON list of predicted brightnesses, in validation order"

    @torch.inference_mode()
    def predict(self, model, paths, data, device, scale=1.0):
        values = model(torch.stack([_tensor(p) for p in paths])) * scale
        return [{"image": p, "brightness": float(v)} for p, v in zip(paths, values)]

    def load_results(self, path, data):
        evaluator = MaeEvaluator()
        predicted = json.loads(Path(path).read_text())
        evaluator.update(torch.tensor(predicted), torch.stack([y for _, y in data.val]))
        return evaluator


REQUIRED = ("name", "ModelConfig", "DataConfig", "build_datasets", "build_model", "training_step", "evaluation_step",
            "build_evaluator")


def test_a_task_needs_eight_members_and_the_minimal_one_trains_and_evaluates(toy, tmp_path):
    """docs/architecture.md states the count: the members without a default in Task, which the minimal toy task
    implements and nothing else."""
    import resvision as rv

    own = {k for k in vars(MinimalToyTask) if not k.startswith("__")}
    assert own == set(REQUIRED) and len(own) <= 8
    for member in REQUIRED:  # each one really is required: Task has no usable default
        default = getattr(Task, member, None)
        assert default in (None, "") or (callable(default) and _raises_not_implemented(default)), member
    assert f"A task needs **{len(REQUIRED)} required members**" in (ROOT / "docs/architecture.md").read_text()
    root, _ = toy
    register_task(MinimalToyTask)
    try:
        config = yaml.safe_load((root / "toy.yaml").read_text()) | {"task": "toy_minimal"}
        (tmp_path / "minimal.yaml").write_text(yaml.safe_dump(config))
        run = rv.train(tmp_path / "minimal.yaml", [f"output={tmp_path / 'run'}"])
        assert set(run.metrics) >= {"mae", "num_samples"}
        report = json.loads(run.report.read_text())
        assert report["best_mae"] == max(r["mae"] for r in _val_rows(run.run_dir))  # no main metric: the first, "max"
        assert rv.evaluate(run.run_dir / "checkpoints/last.pt")["mae"] == run["mae"]
    finally:
        unregister_task("toy_minimal")


def _raises_not_implemented(method):
    import inspect

    return "raise NotImplementedError" in inspect.getsource(method)


def _val_rows(run_dir):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["split"] == "val"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    register_task(ToyTask)
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(np.full((8, 8, 3), rng.integers(0, 256), np.uint8)).save(root / f"{i:02d}.png")
    config = {"task": "toy_brightness", "data": {"root": str(root)},
              "train": {"epochs": 2, "batch_size": 4, "num_workers": 0, "progress": False},
              "optim": {"name": "adamw", "lr": 0.01}, "sched": {"name": "constant"}}
    (root / "toy.yaml").write_text(yaml.safe_dump(config))
    run = root / "run"
    assert main(["train", "--config", str(root / "toy.yaml"), "--output", str(run)]) == 0
    yield root, run
    unregister_task("toy_brightness")


def test_toy_task_trains_evaluates_and_predicts_through_the_cli(toy, tmp_path, capsys):
    root, run = toy
    assert "toy" not in (ROOT / "cli.py").read_text() and "toy" not in (ROOT / "engine/trainer.py").read_text()
    report = json.loads((run / "report.json").read_text())
    assert report["num_samples"] == 4 and report["best_epoch"] in (1, 2)
    ckpt = run / "checkpoints/last.pt"
    assert main(["eval", "--checkpoint", str(ckpt), "--output", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval/report.json").read_text())["mae"] == pytest.approx(report["mae"], abs=1e-6)
    assert main(["predict", "--checkpoint", str(ckpt), "--output", str(tmp_path / "pred"), "--scale", "2",
                 str(root / "00.png")]) == 0
    doubled = json.loads((tmp_path / "pred/predictions.json").read_text())[0]["brightness"]
    assert main(["predict", "--checkpoint", str(ckpt), "--output", str(tmp_path / "pred1"), str(root / "00.png")]) == 0
    assert doubled == pytest.approx(2 * json.loads((tmp_path / "pred1/predictions.json").read_text())[0]["brightness"])
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(ckpt), "--topk", "3", str(root / "00.png")]) == 2
    assert capsys.readouterr().err.strip() == "error: --topk does not apply to task toy_brightness"


def test_toy_task_scores_an_external_predictions_file(toy, tmp_path):
    root, _ = toy
    truth = [float(_tensor(root / f"{i:02d}.png").mean()) for i in range(12, 16)]
    (tmp_path / "pred.json").write_text(json.dumps([t + 0.1 for t in truth]))
    assert main(["eval", "--config", str(root / "toy.yaml"), "--predictions", str(tmp_path / "pred.json"),
                 "--output", str(tmp_path / "scored")]) == 0
    assert json.loads((tmp_path / "scored/report.json").read_text())["mae"] == pytest.approx(0.1, abs=1e-6)


def test_unsupported_operations_are_one_line(tmp_path, capsys, tiny_folder):
    (tmp_path / "p.json").write_text("[]")
    assert main(["eval", "--task", "classification", "--predictions", str(tmp_path / "p.json"),
                 "data.format=folder", f"data.root={tiny_folder}", "train.progress=false"]) == 2
    assert capsys.readouterr().err.strip() == "error: task classification does not support scoring a predictions file"


# ------------------------------------------------------------------ eval / predict from a checkpoint
@pytest.fixture(scope="module")
def torchvision_started_run(tiny_folder, tmp_path_factory):
    """A run whose backbone started from `torchvision:IMAGENET1K_V1` (a cached file made here)."""
    import torchvision

    from conftest import tiny_overrides

    from resvision.backbone.weights import torchvision_cache_path, torchvision_weights_url

    cache = torchvision_cache_path(torchvision_weights_url("resnet18", "IMAGENET1K_V1"))
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet18().state_dict(), cache)
    run = tmp_path_factory.mktemp("tv") / "run"
    assert main(["train", "--task", "classification", *tiny_overrides(
        tiny_folder, run, "model.backbone.name=resnet18", "model.backbone.pretrained=torchvision:IMAGENET1K_V1",
        "train.epochs=1")]) == 0
    cache.unlink()  # offline, and the hub cache is gone: eval and predict must not look for it
    return run


def test_eval_and_predict_of_a_torchvision_started_run_work_offline(torchvision_started_run, tiny_folder, tmp_path):
    run = torchvision_started_run
    report = json.loads((run / "report.json").read_text())
    assert main(["eval", "--checkpoint", str(run / "checkpoints/last.pt")]) == 0
    evals = list((run / "eval").iterdir())
    assert len(evals) == 1 and json.loads((evals[0] / "report.json").read_text())["top1"] == report["top1"]
    assert main(["predict", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / "p"),
                 str(tiny_folder / "val")]) == 0
    assert len(json.loads((tmp_path / "p/predictions.json").read_text())) == 9


def test_eval_never_replaces_a_run_report(torchvision_started_run, capsys):
    run = torchvision_started_run
    before = (run / "report.json").read_text()
    assert "best_top1" in json.loads(before)
    assert main(["eval", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "report.json").read_text() == before


def test_resume_followed_by_an_override(tiny_folder, tmp_path):
    from conftest import tiny_overrides

    run = tmp_path / "run"
    assert main(["train", "--task", "classification", *tiny_overrides(tiny_folder, run, "train.epochs=1")]) == 0
    assert main(["train", "--task", "classification", *tiny_overrides(tiny_folder, run), "--resume",
                 "train.epochs=2"]) == 0
    assert json.loads((run / "report.json").read_text())["epochs"] == 2


# ------------------------------------------------------------------ bad images
@pytest.fixture()
def folder_with_bad_images(tiny_folder, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_folder, root)
    good = (root / "val/red/0.png").read_bytes()
    (root / "val/red/0.png").write_bytes(good[: len(good) // 2])  # truncated
    (root / "train/blue/1.png").write_bytes(b"not an image")
    return root


def test_unreadable_images_are_skipped_listed_and_never_substituted(folder_with_bad_images, tmp_path, capsys):
    from conftest import tiny_overrides

    run = tmp_path / "run"
    assert main(["train", "--task", "classification", *tiny_overrides(folder_with_bad_images, run)]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["num_samples"] == 8  # 9 val images, one unreadable: nothing counted twice
    skipped = (run / "skipped.txt").read_text().split()
    assert sorted(Path(p).relative_to(folder_with_bad_images).as_posix() for p in skipped) == [
        "train/blue/1.png", "val/red/0.png"]
    assert (run / "plots/misclassified.png").exists() or report["top1"] == 1.0
    assert (run / "plots/gradcam.png").is_file()


def test_on_bad_image_error_stops_before_training(folder_with_bad_images, tmp_path, capsys):
    from conftest import tiny_overrides

    code = main(["train", "--task", "classification",
                 *tiny_overrides(folder_with_bad_images, tmp_path / "run", "data.on_bad_image=error")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "unreadable image:" in err and "train/blue/1.png" in err
    assert not (tmp_path / "run").exists()


def test_a_failing_plot_never_fails_a_finished_run(tiny_folder, tmp_path, monkeypatch):
    from conftest import tiny_overrides

    from resvision.tasks.classification.task import ClassificationTask

    def broken(*args, **kwargs):
        raise DataError("plot exploded")

    monkeypatch.setattr(ClassificationTask, "_grad_cam_grid", broken)
    run = tmp_path / "run"
    assert main(["train", "--task", "classification", *tiny_overrides(tiny_folder, run)]) == 0
    assert json.loads((run / "report.json").read_text())["top1"] >= 0 and (run / "checkpoints/last.pt").is_file()


PLUGIN = '''
"""A third-party task, installed as a plugin: mean brightness regression on a registry backbone."""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resvision.backbone import build_backbone_from_config
from resvision.config import BackboneConfig, setting
from resvision.datasets import as_rgb, image_label
from resvision.tasks import DataInfo, Evaluator, Task


@dataclass
class ModelConfig:
    backbone: BackboneConfig = setting(factory=lambda: BackboneConfig(name="resnet20"), help="the backbone")


@dataclass
class DataConfig:
    root: str = setting("", "folder of PNG images")


def tensor(image):
    return torch.from_numpy(as_rgb(image).copy()).permute(2, 0, 1).float() / 255


class Mae(Evaluator):
    state_fields = ("errors",)

    def update(self, predictions, targets):
        self.errors.extend((predictions - targets).abs().cpu().tolist())

    def compute(self):
        return {"mae": float(np.mean(self.errors)), "num_samples": float(len(self.errors))}


class Brightness(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(backbone.feature_specs[-1].channels, 1)

    def forward(self, x):
        return self.head(list(self.backbone(x).values())[-1].mean((2, 3)))[:, 0]


class BrightnessTask(Task):
    name = "brightness_plugin"
    description = "plugin: mean brightness of an image"
    ModelConfig, DataConfig = ModelConfig, DataConfig
    default_config = str(Path(__file__).with_name("brightness.yaml"))
    main_metric, main_metric_mode = "mae", "min"

    def build_datasets(self, training=True):
        items = [(tensor(p), tensor(p).mean()) for p in sorted(Path(self.cfg.data.root).glob("*.png"))]
        return DataInfo(items[:12], items[12:], classes=["brightness"])

    def build_model(self, data):
        return Brightness(build_backbone_from_config(self.cfg.model.backbone))

    def training_step(self, model, batch):
        return {"mse": F.mse_loss(model(batch[0]), batch[1])}

    def evaluation_step(self, model, batch):
        return model(batch[0]), batch[1]

    def build_evaluator(self, data):
        return Mae()

    @torch.inference_mode()
    def predict(self, model, images, data, device):
        values = model(torch.stack([tensor(p) for p in images]))
        return [{"image": image_label(p, i), "brightness": float(v)} for i, (p, v) in enumerate(zip(images, values))]


class MaxPoolHead(nn.Module):
    """A classification head of the same package (entry point classification.maxpool)."""

    def __init__(self, backbone, num_classes):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.feature_specs[-1].channels, num_classes)

    def forward(self, x):
        return self.fc(self.backbone(x)[self.backbone.feature_specs[-1].name].amax((2, 3)))
'''


def test_an_installed_plugin_task_runs_through_the_cli(tmp_path):
    """A package that declares a task under the ``resvision.tasks`` entry-point group (installed here as a
    package + its .dist-info on the path, as pip leaves them) is listed, trained, evaluated and used to predict by
    the command line, which has never heard of it."""
    import subprocess
    import sys

    site = tmp_path / "site"
    (site / "brightness_plugin").mkdir(parents=True)
    (site / "brightness_plugin/__init__.py").write_text(PLUGIN)
    config = {"task": "brightness_plugin", "train": {"epochs": 2, "batch_size": 4, "num_workers": 0, "progress": False},
              "optim": {"name": "adamw", "lr": 0.01}, "sched": {"name": "constant"}}
    (site / "brightness_plugin/brightness.yaml").write_text(yaml.safe_dump(config))
    info = site / "brightness_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brightness-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[resvision.tasks]\nbrightness_plugin = brightness_plugin:BrightnessTask\n\n"
                                           "[resvision.heads]\nclassification.maxpool = brightness_plugin:MaxPoolHead\n")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(np.full((8, 8, 3), rng.integers(0, 256), np.uint8)).save(images / f"{i:02d}.png")
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}

    def cli(*args):
        result = subprocess.run([sys.executable, "-m", "resvision.cli", *args], env=env, capture_output=True,
                                text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    assert "brightness_plugin" in cli("train", "--help")
    run = tmp_path / "run"
    cli("train", "--task", "brightness_plugin", f"data.root={images}", "--output", str(run))
    report = json.loads((run / "report.json").read_text())
    assert report["num_samples"] == 4 and report["mae"] >= 0
    cli("eval", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / "eval"))
    assert json.loads((tmp_path / "eval/report.json").read_text())["mae"] == pytest.approx(report["mae"], abs=1e-6)
    cli("predict", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / "pred"),
        str(images / "00.png"))
    assert json.loads((tmp_path / "pred/predictions.json").read_text())[0]["image"].endswith("00.png")
    # the package's head: a classification run with model.head=maxpool, then predict in a new process that finds the
    # head through the entry point alone
    from resvision.datasets import digits_folder

    digit = str(next(digits_folder().glob("val/3/*.png")))
    cli("train", "--task", "classification", "model.head=maxpool", "train.max_iters=2", "train.eval_every=1",
        "--output", str(tmp_path / "head_run"))
    state = torch.load(tmp_path / "head_run/checkpoints/last.pt", weights_only=True)
    assert state["config"]["model"]["head"] == "maxpool" and "fc.weight" in state["model"]
    cli("predict", "--checkpoint", str(tmp_path / "head_run/checkpoints/last.pt"), "--output",
        str(tmp_path / "head_pred"), digit)
    assert len(json.loads((tmp_path / "head_pred/predictions.json").read_text())[0]["topk"]) == 5
