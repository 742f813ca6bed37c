"""Detection end to end on the built-in shapes set: train a few steps, both protocols in one
report, `eval --predictions` on the written results, `predict` on images."""

import json

import pytest

from resvision.cli import main

FAST = ["train.max_iters=4", "train.progress=false", "train.batch_size=4", "model.box_batch_size_per_image=32",
        "model.rpn_post_nms_top_n_train=100", "model.rpn_post_nms_top_n_test=50", "model.box_detections_per_img=20",
        "model.box_score_thresh=0.0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "run"
    assert main(["train", "--task", "detection", "--output", str(out), *FAST]) == 0
    return out


def test_report_has_coco_and_voc_numbers_and_plots(run):
    report = json.loads((run / "report.json").read_text())
    for key in ("bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl", "bbox_AR100",
                "voc07_mAP50", "voc12_mAP50"):
        assert key in report and -1 <= report[key] <= 1
    assert report["num_images"] == 100 and report["num_detections"] > 0
    for name in ("per_class_ap.csv", "detections.json", "coco_eval.txt", "protocol.md", "plots/pr_curves.png",
                 "plots/predictions.png", "plots/loss.png", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    rows = (run / "per_class_ap.csv").read_text().splitlines()
    assert rows[0].startswith("class,category_id") and {r.split(",")[0] for r in rows[1:]} == {"circle", "square", "triangle"}


def test_eval_predictions_file_reproduces_the_report(run, tmp_path, capsys):
    assert main(["eval", "--task", "detection", "--predictions", str(run / "detections.json"),
                 "--output", str(tmp_path / "eval")]) == 0
    again = json.loads((tmp_path / "eval/report.json").read_text())
    report = json.loads((run / "report.json").read_text())
    for key in ("bbox_AP", "bbox_AP50", "voc07_mAP50", "voc12_mAP50"):
        assert again[key] == pytest.approx(report[key], abs=1e-12)
    protocol = (tmp_path / "eval/protocol.md").read_text()
    assert "no model ran here" in protocol and "ran through the model" not in protocol
    assert "ran through the model alone" in (run / "protocol.md").read_text()


def test_eval_checkpoint_reproduces_the_report(run, tmp_path):
    assert main(["eval", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / "eval")]) == 0
    again = json.loads((tmp_path / "eval/report.json").read_text())
    assert again["bbox_AP"] == pytest.approx(json.loads((run / "report.json").read_text())["bbox_AP"], abs=1e-9)


def test_eval_reads_only_the_val_split(run, tmp_path):
    """The training files may be gone: COCO with only the val JSON, VOC with only val.txt."""
    import shutil

    from resvision.datasets.shapes import shapes_dataset

    root = shapes_dataset()
    ckpt = str(run / "checkpoints/last.pt")
    assert main(["eval", "--checkpoint", ckpt, "--output", str(tmp_path / "coco"), "data.format=coco",
                 f"data.val_annotations={root / 'annotations/instances_val.json'}", f"data.val_images={root / 'images/val'}",
                 f"data.train_annotations={tmp_path / 'absent.json'}", f"data.train_images={tmp_path / 'absent'}"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert json.loads((tmp_path / "coco/report.json").read_text())["bbox_AP"] == pytest.approx(report["bbox_AP"], abs=1e-9)
    voc = tmp_path / "VOC"
    shutil.copytree(root / "VOC", voc)
    for stem in (voc / "ImageSets/Main/train.txt").read_text().split():
        (voc / f"Annotations/{stem}.xml").unlink()
    (voc / "ImageSets/Main/train.txt").unlink()
    assert main(["eval", "--checkpoint", ckpt, "--output", str(tmp_path / "voc"), "data.format=voc", f"data.root={voc}",
                 "data.classes=[circle, square, triangle]"]) == 0
    assert json.loads((tmp_path / "voc/report.json").read_text())["num_images"] == report["num_images"]


def test_predict_on_a_folder_writes_boxes_json_and_images(run, tmp_path, capsys):
    import shutil

    from resvision.datasets.shapes import shapes_dataset

    folder = tmp_path / "images"
    folder.mkdir()
    for image in sorted((shapes_dataset() / "images" / "val").glob("*.jpg"))[:2]:
        shutil.copy(image, folder)
    image = sorted(folder.iterdir())[0]
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(out),
                 "--score-thresh", "0.0", str(folder)]) == 0
    results = json.loads((out / "predictions.json").read_text())
    assert len(results) == 2 and results[0]["image"] == str(image) and results[0]["detections"]
    det = results[0]["detections"][0]
    assert det["label"] in ("circle", "square", "triangle") and len(det["box"]) == 4
    assert (out / f"{image.stem}_boxes.png").is_file()
    coco = json.loads((out / "results_coco.json").read_text())
    assert len(coco) == sum(len(r["detections"]) for r in results) and coco[0]["category_id"] in (1, 3, 7)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run / "checkpoints/last.pt"), "--score-thresh", "2", str(folder)]) == 2
    assert capsys.readouterr().err.strip() == "error: --score-thresh must lie in [0.0, 1.0], got 2.0"


@pytest.mark.parametrize("args, fragment", [
    (["eval", "--task", "detection", "--predictions", "/no/such.json"], "/no/such.json"),
    (["predict", "--task", "detection", "--checkpoint", "/no/such.pt", "x.jpg"], "/no/such.pt"),
    (["train", "--task", "detection", "data.format=voc"], "data.root"),
    (["train", "--task", "detection", "model.anchor_sizes=[[16]]"], "anchor_sizes"),
])
def test_detection_user_errors(args, fragment, capsys, tmp_path):
    if args[0] == "train":
        args = [*args, "--output", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]


@pytest.mark.slow
def test_default_detection_run_reaches_its_target(tmp_path):
    """The README's promise: `tools/train.py --task detection` on the built-in shapes, about 10 minutes
    on 2 CPU cores, bbox_AP50 >= 0.65 on every fresh run. Run by `make test-slow` (CI calls it) with the
    2 threads a user gets; the README's results table gives the measured spread over seeds and 1 / 2
    threads (docs: the trajectory depends on floating-point reduction order, so one run is not enough).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["train", "--task", "detection", "--output", str(tmp_path / "run"), "train.progress=false"]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "run/report.json").read_text())
    assert report["bbox_AP50"] >= 0.65, report

    # the demo checkpoint through ONNX Runtime: the same COCO numbers within the deploy tolerance, and what INT8
    # costs (reported on stdout and in the export's JSON, not asserted: it is a measurement for the user)
    from resvision import export

    info = export(tmp_path / "run/checkpoints/last.pt", tmp_path / "det.onnx", quantize="int8")
    assert info["parity"]["passed"]
    assert main(["eval", "--checkpoint", info["path"], "--engine", "onnxruntime", "--output", str(tmp_path / "ort")]) == 0
    ort = json.loads((tmp_path / "ort/report.json").read_text())
    assert abs(ort["bbox_AP"] - report["bbox_AP"]) <= 0.002 and abs(ort["bbox_AP50"] - report["bbox_AP50"]) <= 0.002
    print("INT8 (demo detector):", json.dumps(info["int8"]))
