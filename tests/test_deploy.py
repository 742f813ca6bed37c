"""Deploy: ONNX export of every task with its parity check, ONNX Runtime eval / predict through the same task
code as torch, INT8 quantization, and the bad inputs of this path (one line, exit 2)."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from conftest import one_line_error, tiny_overrides
from resvision import export
from resvision.cli import main
from resvision.deploy import OnnxRunner, read_onnx_info
from resvision.errors import UserError

DET = ["train.max_iters=2", "train.progress=false", "train.batch_size=2", "model.box_batch_size_per_image=32",
       "model.rpn_post_nms_top_n_train=100", "model.rpn_post_nms_top_n_test=50", "model.box_detections_per_img=20",
       "model.min_size=160", "model.max_size=200", "model.backbone.custom.widths=[8,8,16,16]",
       "model.backbone.custom.layers=[1,1,1,1]"]


@pytest.fixture(scope="module")
def cls_run(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("cls") / "run"
    assert main(["train", "--task", "classification", *tiny_overrides(tiny_folder, out)]) == 0
    return out


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "run"
    assert main(["train", "--task", "detection", "--output", str(out), *DET]) == 0
    return out


def _report(folder):
    return json.loads((folder / "report.json").read_text())


def _shapes_images(count):
    from resvision.datasets.shapes import shapes_dataset

    return [str(p) for p in sorted((shapes_dataset() / "images" / "val").glob("*.jpg"))[:count]]


def _predict_both(ckpt, onnx_file, images, out, *options):
    """``predict`` with the torch engine on the checkpoint and with ONNX Runtime on the file; both predictions.json."""
    assert main(["predict", "--checkpoint", str(ckpt), "--output", str(out / "torch"), *options, *images]) == 0
    assert main(["predict", "--checkpoint", str(onnx_file), "--output", str(out / "onnxruntime"), *options, *images]) == 0
    return [json.loads((out / engine / "predictions.json").read_text()) for engine in ("torch", "onnxruntime")]


# ------------------------------------------------------------------------------------------ classification
def test_classification_export_parity_metadata_and_ort_eval(cls_run, tmp_path, capsys):
    ckpt = cls_run / "checkpoints/last.pt"
    path = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--output", str(path)]) == 0
    assert "max_diff_vs_scale" in capsys.readouterr().out
    onnx.checker.check_model(str(path))
    info = read_onnx_info(path)
    assert info["task"] == "classification" and info["meta"]["classes"] == ["blue", "green", "red"]
    assert info["preprocessing"]["image_size"] == 16 and info["inputs"]["images"]["shape"][0] == "batch"
    assert info["parity"]["passed"] and info["parity"]["checks"]["max_diff_vs_scale"]["value"] <= 1e-4
    assert "max_abs_diff" in info["parity"]["other"]
    assert json.loads((tmp_path / "model.onnx.json").read_text())["parity"] == info["parity"]

    # the file alone, independently of our wrappers: ONNX Runtime's logits equal the torch model's
    from resvision.predictor import load_for_export

    *_, model = load_for_export(ckpt)
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    got = OnnxRunner(path).run(x)["logits"]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)

    # eval through ONNX Runtime: the same metrics as torch (the run's report is torch's evaluation of last.pt)
    assert main(["eval", "--checkpoint", str(path), "--output", str(tmp_path / "ort")]) == 0  # .onnx: ORT engine
    torch_report, ort_report = _report(cls_run), _report(tmp_path / "ort")
    assert ort_report["top1"] == torch_report["top1"] and ort_report["num_samples"] == torch_report["num_samples"]
    assert (tmp_path / "ort/val_predictions.csv").read_text().count("\n") == torch_report["num_samples"] + 1


def test_parity_limit_is_relative_to_the_output_scale():
    """Logits in the thousands differ by float32 rounding in the third decimal: within the limit, which an absolute
    1e-4 would have failed (a ResNet-50 in the wild); a real error still fails."""
    from resvision.tasks.base import Task

    (op, limit), = Task.onnx_parity_limits.values()
    reference = torch.tensor([[3000.0, -1500.0, 2.0]])
    rounding = Task.parity(None, {"logits": reference}, {"logits": reference + torch.tensor([[0.002, 0.0, 0.0]])})
    assert 1e-3 < rounding["max_abs_diff"] < 1e-2 and rounding["max_diff_vs_scale"] <= limit
    wrong = Task.parity(None, {"logits": reference}, {"logits": reference + torch.tensor([[0.0, 0.0, 1.0]])})
    assert wrong["max_diff_vs_scale"] > limit
    small = torch.tensor([[0.5, -0.2]])  # below 1 the scale is 1: the absolute 1e-4 of before
    assert Task.parity(None, {"logits": small}, {"logits": small + 2e-4})["max_diff_vs_scale"] > limit


def test_classification_predict_engines_agree_and_softmax_export(cls_run, tiny_folder, tmp_path):
    ckpt = cls_run / "checkpoints/last.pt"
    image = sorted((tiny_folder / "val").rglob("*.png"))[0]
    assert main(["predict", "--checkpoint", str(ckpt), "--output", str(tmp_path / "t"), str(image)]) == 0
    assert main(["predict", "--checkpoint", str(ckpt), "--engine", "onnxruntime", "--output", str(tmp_path / "o"),
                 str(image)]) == 0
    torch_pred = json.loads((tmp_path / "t/predictions.json").read_text())[0]
    ort_pred = json.loads((tmp_path / "o/predictions.json").read_text())[0]
    assert [p["label"] for p in torch_pred["topk"]] == [p["label"] for p in ort_pred["topk"]]
    for a, b in zip(torch_pred["topk"], ort_pred["topk"]):
        assert a["prob"] == pytest.approx(b["prob"], abs=1e-4)

    info = export(ckpt, tmp_path / "soft.onnx", postprocess="softmax", quiet=True)
    probs = OnnxRunner(info["path"]).run(torch.randn(2, 3, 16, 16))["probs"]
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert main(["eval", "--checkpoint", info["path"], "--engine", "onnxruntime"]) == 2  # not the plain export


def test_int8_quantization_reports_accuracy_and_speed(cls_run, tmp_path):
    info = export(cls_run / "checkpoints/last.pt", tmp_path / "m.onnx", quantize="int8", calibration_images=16,
                  quiet=True)
    q = info["int8"]
    model = onnx.load(q["path"])
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    # per-channel weights: a weight DequantizeLinear with one scale per output channel
    scales = {i.name: i for i in model.graph.initializer}
    assert any(len(scales[n.input[1]].dims) == 1 and scales[n.input[1]].dims[0] > 1
               for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in scales)
    assert q["calibration_images"] == 16
    assert q["delta"]["top1"] == pytest.approx(q["int8"]["top1"] - q["fp32"]["top1"])
    assert q["speed"]["fp32_images_per_s"] > 0 and q["speed"]["int8_images_per_s"] > 0
    assert read_onnx_info(q["path"])["quantization"]["fp32"] == q["fp32"]
    # the INT8 file evaluates through the same path and reproduces the accuracy stored beside it
    assert main(["eval", "--checkpoint", q["path"], "--engine", "onnxruntime", "--output", str(tmp_path / "e")]) == 0
    assert _report(tmp_path / "e")["top1"] == pytest.approx(q["int8"]["top1"], abs=1e-12)


# --------------------------------------------------------------------------------------------- detection
def test_detection_export_parity_and_ort_eval(det_run, tmp_path):
    ckpt = det_run / "checkpoints/last.pt"
    info = export(ckpt, tmp_path / "det.onnx", parity_images=4, quiet=True)
    checks = info["parity"]["checks"]
    assert info["parity"]["passed"], checks
    assert checks["max_box_diff_px"]["value"] <= 0.5 and checks["label_agreement"]["value"] == 1.0
    assert info["inputs"]["images"]["shape"] == [3, "height", "width"]
    # the RoI merge is a row gather, not torchvision's element-wise ScatterElements (slow in ONNX Runtime)
    assert "ScatterElements" not in {n.op_type for n in onnx.load(info["path"]).graph.node}
    assert main(["eval", "--checkpoint", str(tmp_path / "det.onnx"), "--engine", "onnxruntime",
                 "--output", str(tmp_path / "o")]) == 0
    a, b = _report(det_run), _report(tmp_path / "o")  # the run's report: torch's evaluation of last.pt
    assert b["bbox_AP"] == pytest.approx(a["bbox_AP"], abs=0.002) and b["bbox_AP50"] == pytest.approx(a["bbox_AP50"], abs=0.002)
    # predict: the same detections from both engines on real images of other sizes
    torch_pred, ort_pred = _predict_both(ckpt, tmp_path / "det.onnx", _shapes_images(2), tmp_path, "--score-thresh", "0.0")
    for t, o in zip(torch_pred, ort_pred):
        assert [d["label"] for d in t["detections"]] == [d["label"] for d in o["detections"]]
        for dt, do in zip(t["detections"], o["detections"]):
            assert max(abs(x - y) for x, y in zip(dt["box"], do["box"])) <= 0.5 and abs(dt["score"] - do["score"]) <= 1e-3


def test_detection_int8_quantizes_only_the_task_scopes(det_run, tmp_path):
    """The convolutions and fc layers of the backbone, FPN, RPN head and box head run in INT8; the class / box
    predictors, box decoding and NMS stay float32 (quantizing every node cost the demo detector 6 AP points, and
    ONNX Runtime crashed on such a file of another demo run)."""
    from resvision.tasks.detection import DetectionTask

    info = export(det_run / "checkpoints/last.pt", tmp_path / "det.onnx", parity_images=2, quantize="int8",
                  calibration_images=4, quiet=True)
    scopes = ("/model/backbone/", "/model/rpn/head/", "/model/roi_heads/box_head/")
    assert tuple(info["int8"]["scopes"]) == DetectionTask.int8_scopes == scopes
    graph = onnx.load(info["int8"]["path"]).graph
    producer = {out: node for node in graph.node for out in node.output}
    weighted = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    quantized = {n.name: getattr(producer.get(n.input[1]), "op_type", None) == "DequantizeLinear" for n in weighted}
    inside = {name for name in quantized if name.startswith(scopes)}
    assert all(quantized[name] for name in inside) and {n.split("/")[2] for n in inside} == {"backbone", "rpn", "roi_heads"}
    outside = set(quantized) - inside
    assert {n.rsplit("/", 2)[-2] for n in outside} == {"cls_score", "bbox_pred"} and not any(quantized[n] for n in outside)
    assert set(info["int8"]["fp32"]) == {"bbox_AP", "bbox_AP50"}  # and both files were evaluated


# ------------------------------------------------------------------------------------------ segmentation
def test_segmentation_export_parity_any_size_and_ort_eval(seg_run, tmp_path):
    ckpt = seg_run / "checkpoints/last.pt"
    info = export(ckpt, tmp_path / "seg.onnx", parity_images=8, quiet=True)
    assert info["parity"]["checks"]["argmax_agreement"]["value"] >= 0.999
    assert info["preprocessing"]["pad_to"] == 32
    # sizes the file never saw (not multiples of 32) through the wrapper that pads like the torch model
    from resvision.predictor import load_for_export

    _, _, task, _, model = load_for_export(ckpt)
    ort_model = task.onnx_model(OnnxRunner(tmp_path / "seg.onnx"))
    x = torch.randn(2, 3, 70, 45)
    with torch.no_grad():
        expected = model(x)
    got = ort_model(x)
    assert got.shape == expected.shape
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.999
    # a .pt with --engine onnxruntime: exported on the fly into the eval folder, then evaluated
    assert main(["eval", "--checkpoint", str(ckpt), "--engine", "onnxruntime", "--output", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o/model.onnx").is_file() and (tmp_path / "o/model.onnx.json").is_file()
    assert _report(tmp_path / "o")["mIoU"] == pytest.approx(_report(seg_run)["mIoU"], abs=1e-3)
    # predict through both engines: the same palette masks
    images = _shapes_images(2)
    _predict_both(ckpt, tmp_path / "seg.onnx", images, tmp_path)
    for image in images:
        name = f"{Path(image).stem}_mask.png"
        a, b = (np.asarray(Image.open(tmp_path / engine / name)) for engine in ("torch", "onnxruntime"))
        assert a.shape == b.shape and (a == b).mean() >= 0.999
    mask = export(ckpt, tmp_path / "mask.onnx", postprocess="argmax", quiet=True)
    assert OnnxRunner(mask["path"]).run(torch.randn(1, 3, 64, 96))["mask"].shape == (1, 64, 96)


def test_deeplabv3plus_with_aux_head_exports_and_slides_through_onnxruntime(tmp_path):
    """A dilated backbone (output stride 16) with the DeepLabV3+ decoder and the auxiliary head: the file holds
    the main logits only, passes the parity check, and sliding-window eval of the file equals the run's."""
    from conftest import SEG_FAST

    run = tmp_path / "run"
    assert main(["train", "--task", "segmentation", "--output", str(run), *SEG_FAST, "model.decoder=deeplabv3plus",
                 "model.decoder_channels=[16]", "model.aux_weight=0.4", "model.inference.mode=slide",
                 "model.inference.window=96", "model.inference.stride=64"]) == 0
    info = export(run / "checkpoints/last.pt", tmp_path / "dl.onnx", parity_images=4, quiet=True)
    assert info["parity"]["checks"]["argmax_agreement"]["value"] >= 0.999
    assert info["preprocessing"]["pad_to"] == 16  # the dilated network's deepest stride
    assert [o.name for o in onnx.load(tmp_path / "dl.onnx").graph.output] == ["logits"]
    assert main(["eval", "--checkpoint", str(tmp_path / "dl.onnx"), "--output", str(tmp_path / "o")]) == 0
    assert _report(tmp_path / "o")["mIoU"] == pytest.approx(_report(run)["mIoU"], abs=1e-3)
    assert "sliding 96x96 windows every 64 px" in (tmp_path / "o/protocol.md").read_text()


def test_export_at_another_size_describes_the_graph_it_wrote(cls_run, tmp_path):
    """``--image-size 40 40`` on a 16-px classifier: the stored config resizes / crops to 40, so eval of the file runs
    (before, the metadata said 16 and the file refused its own validation images)."""
    info = export(cls_run / "checkpoints/last.pt", tmp_path / "m40.onnx", image_size=(40, 40), quiet=True)
    assert info["inputs"]["images"]["shape"][2:] == [40, 40]
    assert info["preprocessing"]["image_size"] == 40 and info["preprocessing"]["resize"] == 40  # 16 -> 40, scaled
    assert info["config"]["data"]["image_size"] == 40
    assert main(["eval", "--checkpoint", info["path"], "--output", str(tmp_path / "e")]) == 0
    one_line_error(UserError, ["--image-size 40 48", "H = W"], export, cls_run / "checkpoints/last.pt",
                   tmp_path / "r.onnx", image_size=(40, 48), quiet=True)


def test_a_consumer_with_only_the_metadata_reproduces_eval(cls_run, tiny_folder, tmp_path):
    """Someone with the .onnx file and none of this code (OpenCV, numpy, ONNX Runtime, and the steps the metadata
    spells out) gets every prediction of the project's own eval of that file: here a 24-px export of a 16-px
    classifier, so the stored resize really enlarges."""
    import cv2
    import onnxruntime as ort

    path = export(cls_run / "checkpoints/last.pt", tmp_path / "m.onnx", image_size=(24, 24), quiet=True)["path"]
    meta = json.loads(Path(path + ".json").read_text())
    pre, classes = meta["preprocessing"], meta["meta"]["classes"]
    assert pre["channel_order"].startswith("RGB") and len(pre["steps"]) == 4
    mean, std = np.float32(pre["mean"]), np.float32(pre["std"])
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    mine = {}
    for file in sorted((tiny_folder / "val").rglob("*.png")):
        rgb = np.asarray(Image.open(file).convert("RGB"))
        scale = pre["resize"] / min(rgb.shape[:2])
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))  # cv2: (width, height)
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        crop, (h, w) = pre["image_size"], rgb.shape[:2]
        rgb = rgb[(h - crop) // 2:(h - crop) // 2 + crop, (w - crop) // 2:(w - crop) // 2 + crop]
        x = ((rgb.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None]
        logits = session.run(None, {"images": x})[0][0].astype(np.float64)
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        mine[file.name, file.parent.name] = (classes[int(probs.argmax())], round(float(probs.max()), 4))
    assert main(["eval", "--checkpoint", path, "--output", str(tmp_path / "e")]) == 0
    import csv

    with open(tmp_path / "e/val_predictions.csv") as f:
        theirs = {(Path(r["image"]).name, r["true"]): (r["predicted"], round(float(r["prob"]), 4))
                  for r in csv.DictReader(f)}
    assert mine == theirs and len(mine) == 9  # labels and probabilities (a wrong resize or crop moves these)


def test_a_file_that_failed_its_parity_check_is_refused_unless_allowed(cls_run, tmp_path, monkeypatch, capsys):
    from resvision.tasks.classification import ClassificationTask

    monkeypatch.setattr(ClassificationTask, "onnx_parity_limits", {"max_diff_vs_scale": ("<=", -1.0)})  # unmeetable
    with pytest.raises(UserError, match="does not match the torch model"):
        export(cls_run / "checkpoints/last.pt", tmp_path / "bad.onnx", quantize="int8", quiet=True)
    assert (tmp_path / "bad.onnx").is_file() and not (tmp_path / "bad.int8.onnx").exists()  # stopped before INT8
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "bad.onnx"), "--output", str(tmp_path / "e1")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed its parity check" in err[0] and "--allow-unverified" in err[0]
    assert not (tmp_path / "e1").exists()
    assert main(["eval", "--checkpoint", str(tmp_path / "bad.onnx"), "--output", str(tmp_path / "e2"),
                 "--allow-unverified"]) == 0


# --------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_give_one_line(cls_run, tmp_path, capsys):
    ckpt = cls_run / "checkpoints/last.pt"
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    one_line_error(UserError, [str(corrupt)], read_onnx_info, corrupt)
    assert main(["eval", "--checkpoint", str(corrupt), "--engine", "onnxruntime"]) == 2
    assert main(["predict", "--engine", "torch", "--checkpoint", str(corrupt), str(ckpt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "cannot read" in err[0] and "runs with --engine onnxruntime, not torch" in err[1]
    # a foreign ONNX file (no resvision metadata)
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 2, 1), (torch.randn(1, 3, 8, 8),), str(foreign), dynamo=False)
    one_line_error(UserError, ["not exported by resvision"], read_onnx_info, foreign)
    # wrong channel count
    info = export(ckpt, tmp_path / "m.onnx", quiet=True)
    one_line_error(UserError, ["'images'", "3 channels", "got 1"], OnnxRunner(info["path"]).run, torch.randn(2, 1, 16, 16))
    # an opset too old for an operator of the model
    one_line_error(UserError, ["--opset 7"], export, ckpt, tmp_path / "old.onnx", opset=7, quiet=True)
    # a task name that does not match the checkpoint, and a bad postprocess
    assert main(["export", "--task", "detection", "--checkpoint", str(ckpt)]) == 2
    one_line_error(UserError, ["--postprocess argmax", "classification"], export, ckpt, postprocess="argmax")


# -------------------------------------------------------------------------------------------------- face
@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    from resvision.datasets.synthetic_faces import SYNTHETIC_FACES_SIZES, synthetic_faces_dataset

    root = tmp_path_factory.mktemp("faces")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {"train_identities": 6, "train_images": 3, "test_identities": 10, "test_images": 3,
                           "folds": 2, "pairs_per_fold": 6}.items():
            patch.setitem(SYNTHETIC_FACES_SIZES, key, value)
        synthetic_faces_dataset(root)
    out = tmp_path_factory.mktemp("face") / "run"
    assert main(["train", "--task", "face", "--output", str(out), f"data.root={root}", "train.max_iters=2",
                 "train.progress=false", "train.batch_size=6", "data.image_size=32", "model.embedding_size=16",
                 "model.backbone.custom.widths=[8,8,16,16]", "model.backbone.custom.layers=[1,1,1,1]"]) == 0
    return out, root


def test_face_export_gives_unit_embeddings_and_ort_eval_matches(face_run, tmp_path):
    run, root = face_run
    ckpt = run / "checkpoints/last.pt"
    info = export(ckpt, tmp_path / "face.onnx", parity_images=8, quiet=True)
    assert info["parity"]["checks"]["min_cosine"]["value"] >= 0.9999
    out = OnnxRunner(info["path"]).run(torch.randn(3, 3, 32, 32))
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["embedding"], out["raw_embedding"] / np.linalg.norm(out["raw_embedding"], axis=1,
                                                                                       keepdims=True), atol=1e-5)
    assert main(["eval", "--checkpoint", info["path"], "--engine", "onnxruntime", "--output", str(tmp_path / "o")]) == 0
    a, b = _report(run), _report(tmp_path / "o")
    assert b["num_pairs"] == a["num_pairs"] and b["roc_auc"] == pytest.approx(a["roc_auc"], abs=1e-3)
    one_line_error(UserError, ["'images'", "32", "got 40"], OnnxRunner(info["path"]).run, torch.randn(1, 3, 40, 40))
    assert main(["export", "--checkpoint", str(ckpt), "--image-size", "48", "48", "--output", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()  # refused before anything is traced or written
    pair = sorted(root.rglob("test/*/*.jpg"))[:2]
    torch_pred, ort_pred = _predict_both(ckpt, Path(info["path"]), [str(p) for p in pair], tmp_path)
    assert torch_pred[0]["pair"]["similarity"] == pytest.approx(ort_pred[0]["pair"]["similarity"], abs=1e-4)
    assert torch_pred[0]["pair"]["same"] == ort_pred[0]["pair"]["same"] or \
        abs(torch_pred[0]["pair"]["similarity"] - torch_pred[0]["pair"]["threshold"]) < 1e-4


@pytest.mark.filterwarnings("ignore")  # the tracer's notes on torchvision's level scales (constants by design)
def test_exportable_roi_align_traced_graph_equals_torchvision_eager():
    """Our RoI pooler's traced merge (concatenate + argsort gather) gives torchvision's eager values, also for
    boxes other than the ones it was traced on (other count, other FPN levels)."""
    from torchvision.ops import MultiScaleRoIAlign

    from resvision.tasks.detection.model import ExportableRoIAlign

    names = ["c3", "c4", "c5"]

    class Pool(torch.nn.Module):
        def __init__(self, pool):
            super().__init__()
            self.pool = pool

        def forward(self, f3, f4, f5, boxes):
            return self.pool({"c3": f3, "c4": f4, "c5": f5}, [boxes], [(256, 256)])

    def boxes(n, seed):
        g = torch.Generator().manual_seed(seed)
        xy = torch.rand(n, 2, generator=g) * 150
        wh = 4 + torch.rand(n, 2, generator=g) * 100
        return torch.cat([xy, xy + wh], dim=1)

    torch.manual_seed(0)
    feats = (torch.randn(1, 4, 32, 32), torch.randn(1, 4, 16, 16), torch.randn(1, 4, 8, 8))
    with torch.no_grad():
        traced = torch.jit.trace(Pool(ExportableRoIAlign(names, 7, 2)), (*feats, boxes(20, 0)), check_trace=False)
        reference = Pool(MultiScaleRoIAlign(names, 7, 2))
        for n, seed in ((20, 0), (7, 1), (33, 2)):
            b = boxes(n, seed)
            torch.testing.assert_close(traced(*feats, b), reference(*feats, b), rtol=0, atol=0)


def test_unknown_task_checkpoint_and_missing_runtime_give_one_line(cls_run, tmp_path, monkeypatch):
    state = torch.load(cls_run / "checkpoints/last.pt", weights_only=True)
    state["task"] = state["config"]["task"] = "sorting"
    torch.save(state, tmp_path / "odd.pt")
    one_line_error(UserError, ["sorting"], export, tmp_path / "odd.pt")
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # as if not installed
    one_line_error(UserError, ["pip install onnxruntime"], OnnxRunner, tmp_path / "m.onnx")


def test_detection_eval_resize_matches_the_exported_graph_on_every_size():
    """Our detector's evaluation resize gives ONNX Runtime's output size on every image size tried, where
    torchvision's eager resize (double precision) lands a pixel off on some of them."""
    import onnxruntime as ort
    from torchvision.models.detection.transform import _resize_image_and_masks

    from resvision.tasks.detection.model import ExportableTransform

    class Traced(torch.nn.Module):  # torchvision's traced resize: what the exported detector computes
        def forward(self, x):
            return _resize_image_and_masks(x, 160, 240)[0]

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/resize.onnx"
        torch.onnx.export(Traced(), (torch.rand(3, 130, 150),), path, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {1: "h", 2: "w"}})
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        ours = ExportableTransform(160, 240, [0.0] * 3, [1.0] * 3).eval()
        torchvision_off = 0
        for h in range(90, 330, 4):
            for w in (97, 150, 263):
                x = torch.zeros(3, h, w)
                exported = session.run(None, {"x": x.numpy()})[0].shape[1:]
                assert tuple(ours.resize(x)[0].shape[1:]) == tuple(exported), (h, w)
                torchvision_off += tuple(_resize_image_and_masks(x, 160, 240)[0].shape[1:]) != tuple(exported)
    assert torchvision_off > 0  # the case this transform exists for
