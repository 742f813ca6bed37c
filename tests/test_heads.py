"""A head of one's own on a registry backbone (``@rv.register_head``): trained, evaluated, predicted and exported
like a built-in one, with Grad-CAM in its report and the backbone it really has recorded in its checkpoint."""

import json

import pytest
import torch
from conftest import one_line_error, tiny_overrides
from torch import nn

import resvision as rv
from resvision.cli import main
from resvision.engine.checkpoint import load_checkpoint
from resvision.errors import ConfigError
from resvision.tasks.classification import ClassificationTask, grad_cam
from resvision.tasks.heads import unregister_head


class MlpHead(nn.Module):
    def __init__(self, backbone, num_classes, hidden=32):
        super().__init__()
        self.backbone = backbone
        self.deepest = backbone.feature_specs[-1].name
        self.mlp = nn.Sequential(nn.Linear(backbone.feature_specs[-1].channels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.mlp(self.backbone(x)[self.deepest].amax((2, 3)))  # max pooling: not the built-in head


@pytest.fixture(scope="module")
def mlp_run(tiny_folder, tmp_path_factory):
    rv.register_head("classification", "mlp")(MlpHead)
    out = tmp_path_factory.mktemp("heads") / "run"
    run = rv.train("classification", tiny_overrides(tiny_folder, out, "model.head=mlp", "model.head_options={hidden: 16}",
                                                   "model.backbone.name=resnet32"))
    yield run
    unregister_head("classification", "mlp")


def test_a_registered_head_trains_reports_and_loads_everywhere(mlp_run, tiny_folder, tmp_path):
    checkpoint = mlp_run.run_dir / "checkpoints/last.pt"
    state = load_checkpoint(checkpoint)
    assert state["backbone"] == "resnet32" and state["config"]["model"]["head"] == "mlp"
    assert any(k.startswith("model.mlp.2.") or k.startswith("mlp.2.") for k in state["model"])
    assert (mlp_run.run_dir / "plots/gradcam.png").is_file()  # the report is complete, Grad-CAM included
    predictor = rv.load(checkpoint)
    assert isinstance(predictor.model, MlpHead) and predictor.model.mlp[0].out_features == 16
    files = sorted(str(p) for p in (tiny_folder / "val").rglob("*.png"))[:3]
    assert main(["predict", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "p"), *files]) == 0
    cli = json.loads((tmp_path / "p/predictions.json").read_text())
    assert [r.to_dict() for r in predictor(files)] == [{k: v for k, v in r.items() if k != "files"} for r in cli]
    evaluation = rv.evaluate(checkpoint)
    assert evaluation["top1"] == mlp_run["top1"]
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "m.onnx")]) == 0
    onnx = rv.load(tmp_path / "m.onnx")
    assert [r["topk"][0]["label"] for r in onnx(files)] == [r["topk"][0]["label"] for r in cli]


def test_grad_cam_of_a_registered_head_matches_the_hook_reference(mlp_run):
    model = rv.load(mlp_run.run_dir / "checkpoints/last.pt").model.float().eval()
    x = torch.randn(2, 3, 16, 16)
    cams, classes = grad_cam(model, x)
    saved = {}
    stage = model.backbone.layer3
    hooks = [stage.register_forward_hook(lambda m, i, o: saved.__setitem__("act", o)),
             stage.register_full_backward_hook(lambda m, gi, go: saved.__setitem__("grad", go[0]))]
    model(x.clone().requires_grad_(True)).gather(1, classes[:, None]).sum().backward()
    for h in hooks:
        h.remove()
    ref = torch.relu((saved["grad"].mean((2, 3), keepdim=True) * saved["act"]).sum(1, keepdim=True))
    ref = torch.nn.functional.interpolate(ref, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    ref = ref / ref.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    torch.testing.assert_close(cams, ref.detach(), atol=1e-5, rtol=1e-4)


def test_head_mistakes_are_one_line_errors(mlp_run, tiny_folder, tmp_path):
    checkpoint = mlp_run.run_dir / "checkpoints/last.pt"
    one_line_error(ConfigError, ["model.head='mpl'", "did you mean 'mlp'"], rv.create_model, "classification",
                   num_classes=3, head="mpl")
    one_line_error(ConfigError, ["head_options", "width"], rv.create_model, "classification", num_classes=3,
                   head="mlp", head_options={"width": 3})
    rv.register_head("classification", "forgetful")(lambda backbone, num_classes: nn.Linear(3, num_classes))
    one_line_error(ConfigError, ["'forgetful'", "`backbone` attribute"], rv.create_model, "classification",
                   num_classes=3, head="forgetful")
    unregister_head("classification", "forgetful")
    unregister_head("classification", "mlp")  # another process, where nothing registered it
    try:
        one_line_error(ConfigError, ["model.head='mlp'", "rv.register_head"], rv.load, checkpoint)
    finally:
        rv.register_head("classification", "mlp")(MlpHead)
    with pytest.raises(ValueError, match="detection"):
        rv.register_head("detection", "x")


def test_a_model_whose_backbone_is_not_the_configs_is_refused_before_training(tiny_folder, tmp_path):
    class Swapped(ClassificationTask):  # the pattern that wrote checkpoints no tool could rebuild
        def build_model(self, data):
            return rv.create_model("classification", backbone="resnet20", num_classes=len(data.classes))

    cfg = rv.load_config("classification", tiny_overrides(tiny_folder, tmp_path / "run", "model.backbone.name=resnet32"))
    one_line_error(ConfigError, ["'resnet20'", "'resnet32'", "rv.register_head"], rv.Trainer(Swapped(cfg)).fit)
    assert not (tmp_path / "run").exists()
