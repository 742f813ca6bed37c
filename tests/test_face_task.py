"""Face model, evaluator and the task end to end on a small copy of the built-in synthetic people.

References: the verification functions (checked against insightface's procedure in test_face_verification.py)
applied directly to the same embeddings, hand-made eval sets, and the embeddings `predict` writes.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_FACES

from resvision.backbone import build_backbone
from resvision.cli import main
from resvision.datasets.face import FaceEvalSet
from resvision.datasets.face_pairs import write_verification_bin
from resvision.datasets.synthetic_faces import SYNTHETIC_FACES_DIR
from resvision.tasks.face import FaceEvaluator, FaceModel, flip_embeddings
from resvision.tasks.face.margin import ArcFace, CosFace
from resvision.tasks.face.task import FaceDataInfo
from resvision.tasks.face.verification import rank1_accuracy, verify

TINY = TINY_FACES


def _tiny_backbone():
    return build_backbone("custom", block="basic", layers=[1, 1, 1, 1], widths=[8, 8, 16, 16])


# ------------------------------------------------------------------------------------------------ model
def test_model_embeds_and_applies_the_margin_to_its_own_cosines():
    torch.manual_seed(0)
    model = FaceModel(_tiny_backbone(), ArcFace(s=16, m=0.3), num_classes=5, input_size=32, embedding_size=12).eval()
    x, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 4, 2])
    with torch.no_grad():
        emb = model(x)
        logits = model(x, labels)
    assert emb.shape == (3, 12)
    # the margin head's cosines: normalised embeddings against normalised class weights
    cosine = F.normalize(emb, dim=1) @ F.normalize(model.head.weight, dim=1).T
    expected = 16 * cosine
    expected[torch.arange(3), labels] = 16 * torch.cos(torch.acos(cosine[torch.arange(3), labels]) + 0.3)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    # the flattened map: 16 channels x 1 x 1 at stride 32 for a 32 px input
    assert model.embedding[3].in_features == 16
    with pytest.raises(ValueError, match="32x32"):
        model(torch.randn(1, 3, 40, 40))


def test_flip_embeddings_sum_image_and_mirror_then_normalise():
    torch.manual_seed(0)
    model = FaceModel(_tiny_backbone(), CosFace(), num_classes=3, input_size=32, embedding_size=8).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        got = flip_embeddings(model, x)
        expected = F.normalize(model(x) + model(x.flip(-1)), dim=1)
        mirrored = flip_embeddings(model, x.flip(-1))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, mirrored)  # a face and its mirror image get the same embedding
    torch.testing.assert_close(got.norm(dim=1), torch.ones(4))


# -------------------------------------------------------------------------------------------- evaluator
def test_evaluator_scores_pairs_and_probes_by_image_index():
    rng = np.random.default_rng(0)
    n = 40
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pairs = np.stack([rng.integers(0, n, 30), rng.integers(0, n, 30), np.arange(30) % 2], axis=1)
    identity = np.repeat(np.arange(10), 4)
    gallery, probes = np.arange(0, n, 4), np.setdiff1d(np.arange(n), np.arange(0, n, 4))
    eval_set = FaceEvalSet([f"img{i}.png" for i in range(n)], [f"img{i}.png" for i in range(n)], None, pairs,
                           identity, gallery, probes)
    data = FaceDataInfo()
    evaluator = FaceEvaluator(eval_set, data)
    order = rng.permutation(n)  # batches arrive in any order (ranks, shards)
    for chunk in np.array_split(order, 3):
        evaluator.update(torch.from_numpy(emb[chunk]), torch.from_numpy(chunk))
    metrics = evaluator.compute()
    reference = verify(emb[pairs[:, 0]], emb[pairs[:, 1]], pairs[:, 2].astype(bool)).metrics
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    assert set(metrics) <= evaluator.metric_names()  # checked against train.monitor when a run starts
    assert evaluator.metric_names() - set(metrics) <= {"tar_at_far_1e-3", "tar_at_far_1e-4"}  # too few pairs for them
    assert metrics["rank1"] == rank1_accuracy(emb[gallery], identity[gallery], emb[probes], identity[probes])
    assert data.threshold == metrics["verif_threshold"]  # travels into the checkpoint's meta for predict

    evaluator.reset()
    evaluator.update(torch.from_numpy(emb[:5]), torch.arange(5))
    with pytest.raises(ValueError, match="one embedding per image"):
        evaluator.compute()


# --------------------------------------------------------------------------------------------- the task
FAST = ["train.max_iters=3", "train.progress=false", "train.batch_size=6", "data.image_size=32",
        "model.backbone.custom.widths=[8,8,16,16]", "model.backbone.custom.layers=[1,1,1,1]", "model.embedding_size=16"]


@pytest.fixture(scope="module")
def cache(tiny_faces):
    return tiny_faces


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("face") / "run"
    assert main(["train", "--task", "face", "--output", str(out), f"data.root={cache}", *FAST]) == 0
    return out


def test_report_metrics_and_plots(run):
    report = json.loads((run / "report.json").read_text())
    for key in ("verif_acc", "verif_acc_std", "roc_auc", "rank1"):
        assert 0 <= report[key] <= 1, key
    assert report["num_pairs"] == TINY["folds"] * TINY["pairs_per_fold"] * 2
    assert report["num_probes"] == TINY["test_identities"] * (TINY["test_images"] - 1)
    scores = np.genfromtxt(run / "pair_scores.csv", delimiter=",", skip_header=1, usecols=(2, 3))
    assert len(scores) == report["num_pairs"]
    reference = verify(np.c_[scores[:, 1], np.sqrt(1 - scores[:, 1] ** 2)], np.c_[np.ones(len(scores)), np.zeros(len(scores))],
                       scores[:, 0].astype(bool))  # unit vectors whose cosine is each pair's similarity
    assert report["verif_acc"] == pytest.approx(reference.metrics["verif_acc"], abs=1e-9)
    for name in ("protocol.md", "plots/roc.png", "plots/similarity_histogram.png", "plots/hardest_pairs.png",
                 "checkpoints/last.pt"):
        assert (run / name).is_file(), name


def test_eval_reproduces_the_report_and_reads_a_bin(run, cache, tmp_path):
    report = json.loads((run / "report.json").read_text())
    assert main(["eval", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / "a")]) == 0
    again = json.loads((tmp_path / "a/report.json").read_text())
    assert again["verif_acc"] == report["verif_acc"] and again["rank1"] == report["rank1"]

    # the same pairs as an insightface .bin: same images (PNG-free: the JPEG bytes themselves), same flags
    from resvision.datasets.face_pairs import read_pairs

    pairs = read_pairs(cache / SYNTHETIC_FACES_DIR / "test/pairs.txt", cache / SYNTHETIC_FACES_DIR / "test")
    images = [open(path, "rb").read() for p in pairs for path in (p.path_a, p.path_b)]
    bin_file = write_verification_bin(tmp_path / "tiny.bin", images, [p.same for p in pairs])
    assert main(["eval", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / "b"),
                 f"data.bin={bin_file}"]) == 0
    from_bin = json.loads((tmp_path / "b/report.json").read_text())
    assert from_bin["verif_acc"] == pytest.approx(report["verif_acc"], abs=1e-12)
    assert from_bin["roc_auc"] == pytest.approx(report["roc_auc"], abs=1e-9)
    # evaluating a .bin reads only the .bin: an empty cache stays empty (the built-in people are not written)
    empty = tmp_path / "empty_cache"
    assert main(["eval", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / "c"),
                 f"data.bin={bin_file}", f"data.root={empty}"]) == 0
    assert not empty.exists() or not any(empty.iterdir())
    assert json.loads((tmp_path / "c/report.json").read_text())["verif_acc"] == from_bin["verif_acc"]


def test_predict_compares_two_faces_at_the_checkpoint_threshold(run, cache, tmp_path):
    report = json.loads((run / "report.json").read_text())
    a, b = sorted((cache / SYNTHETIC_FACES_DIR / "test/person_0006").glob("*.jpg"))[:2]
    out = tmp_path / "p"
    assert main(["predict", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(out), str(a), str(b)]) == 0
    results = json.loads((out / "predictions.json").read_text())
    ea, eb = (np.array(r["embedding"]) for r in results)
    pair = results[0]["pair"]
    assert pair["threshold"] == pytest.approx(report["verif_threshold"])
    assert pair["similarity"] == pytest.approx(float(ea @ eb), abs=1e-5)
    assert pair["same"] == (pair["similarity"] > pair["threshold"])
    assert np.linalg.norm(ea) == pytest.approx(1, abs=1e-5)
    # the library's result objects: embedding and similarity() are the record's
    import resvision as rv

    ra, rb = rv.load(run / "checkpoints/last.pt")([a, b])
    np.testing.assert_allclose(ra.embedding, ea, atol=1e-6)
    assert ra.similarity(rb) == pytest.approx(pair["similarity"], abs=1e-5) and ra.to_dict() == {
        k: v for k, v in results[0].items() if k != "files"}
    assert results[0]["files"] == [f"{a.stem}_face.png"] and (out / results[0]["files"][0]).is_file()


@pytest.mark.parametrize("override", [
    ["model.margin=cosface"],
    ["model.margin=combined", "model.m1=0.9", "model.m=0.4", "model.m3=0.15"],
    ["model.backbone.name=resnet50", "model.backbone.custom=null"],
    ["model.backbone.name=timm:resnet18", "model.backbone.custom=null"],
])
def test_swapped_margin_or_backbone_trains_a_step(cache, tmp_path, override):
    args = [a for a in FAST if not a.startswith("model.backbone.custom")] if "model.backbone.custom=null" in override else FAST
    override = [o for o in override if o != "model.backbone.custom=null"]
    assert main(["train", "--task", "face", "--output", str(tmp_path / "r"), f"data.root={cache}", *args,
                 "train.max_iters=1", *override]) == 0
    assert json.loads((tmp_path / "r/report.json").read_text())["steps"] == 1


@pytest.mark.parametrize("args, fragment", [
    (["data.pairs=/nope/pairs.txt", "data.bin=/nope/lfw.bin"], "data.bin"),
    (["data.format=folders"], "data.pairs"),
    (["data.format=folders", "data.pairs=/x/pairs.txt"], "data.train"),
    (["data.bin=/x/lfw.bin"], "/x/lfw.bin"),
    (["model.margin=sphereface"], "model.margin"),
    (["data.format=folders", "data.train=/no/such/folder", "data.pairs=/no/pairs.txt"], "/no/such/folder"),
])
def test_face_user_errors(args, fragment, cache, capsys, tmp_path):
    assert main(["train", "--task", "face", "--output", str(tmp_path / "out"), f"data.root={cache}", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_hostile_bin_is_refused_at_eval(run, tmp_path, capsys, monkeypatch):
    import os
    import pickle

    from resvision.tasks.face.task import FaceTask

    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([Hostile()], [True])))

    def build_model(*args, **kwargs):
        raise AssertionError("the model was built before the evaluation file was read and checked")

    monkeypatch.setattr(FaceTask, "build_model", build_model)
    assert main(["eval", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / "e"),
                 f"data.bin={tmp_path / 'evil.bin'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evil.bin" in err[0]
    assert not marker.exists()


def test_eval_with_another_identity_count_than_the_checkpoint(run, capsys, tmp_path):
    assert main(["eval", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / "e"),
                 "model.num_classes=50"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "num_classes" in err[0]


def test_predict_identifies_against_a_gallery(run, cache, tmp_path):
    gallery = cache / SYNTHETIC_FACES_DIR / "test"
    images = sorted(gallery.glob("person_000[6-9]/*.jpg"))
    out = tmp_path / "p"
    assert main(["predict", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(out), "--gallery",
                 str(gallery), *map(str, images)]) == 0
    results = json.loads((out / "predictions.json").read_text())
    # the gallery's people: normalised mean embedding of their images, recomputed from predict's own embeddings
    # of every gallery image (the ones asked about here are a subset of it)
    assert main(["predict", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / "all"),
                 str(gallery)]) == 0
    everyone = json.loads((tmp_path / "all/predictions.json").read_text())
    people = sorted({Path(r["image"]).parent.name for r in everyone})
    centres = np.stack([np.mean([r["embedding"] for r in everyone if Path(r["image"]).parent.name == p], axis=0)
                        for p in people])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    threshold = json.loads((run / "report.json").read_text())["verif_threshold"]
    for r in results:
        scores = centres @ np.array(r["embedding"])
        assert r["nearest"] == people[int(scores.argmax())]
        assert r["identity_similarity"] == pytest.approx(scores.max(), abs=1e-4)
        assert r["identity"] == (r["nearest"] if scores.max() > threshold else "unknown")


def test_predict_aligns_photos_and_lists_images_without_a_face(run, tmp_path):
    """data.align: MTCNN finds the astronaut's face in the photo and in a shifted, padded copy (the same face
    after alignment: similarity near 1); a blank image has no face and is listed, not fatal."""
    from PIL import Image
    from skimage.data import astronaut

    photo = astronaut()
    Image.fromarray(photo).save(tmp_path / "a.png")
    Image.fromarray(np.pad(photo, ((40, 0), (0, 60), (0, 0)), constant_values=128)).save(tmp_path / "b.png")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "c.png")
    out = tmp_path / "p"
    assert main(["predict", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(out), "--set",
                 "data.align=true", *(str(tmp_path / n) for n in ("a.png", "b.png", "c.png"))]) == 0
    a, b, c = json.loads((out / "predictions.json").read_text())
    assert c["error"] == "no face found" and "embedding" not in c
    import resvision as rv

    with pytest.raises(ValueError, match="c.png: no face was found"):
        rv.load(run / "checkpoints/last.pt", overrides=["data.align=true"])(str(tmp_path / "c.png"))[0].similarity(
            rv.load(run / "checkpoints/last.pt")(str(tmp_path / "a.png"))[0])
    assert float(np.dot(a["embedding"], b["embedding"])) > 0.9  # 0.97 measured with this 3-step model
    # the embedding of the photo is the embedding of its aligned crop (aligned here, independently of predict)
    from resvision.tasks.face.align import FaceAligner

    Image.fromarray(FaceAligner(size=32).align(photo)).save(tmp_path / "crop.png")
    assert main(["predict", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / "q"),
                 str(tmp_path / "crop.png")]) == 0
    (crop,) = json.loads((tmp_path / "q/predictions.json").read_text())
    np.testing.assert_allclose(crop["embedding"], a["embedding"], atol=1e-5)


@pytest.mark.slow
def test_default_face_run_reaches_its_target(tmp_path):
    """`tools/train.py --task face` on the built-in synthetic people: the issue's target is verif_acc >= 0.95 within
    5 minutes of training on 2 CPU cores; the README gives the measured spread (seeds 0-2, 1 and 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["train", "--task", "face", "--output", str(tmp_path / "run"), "train.progress=false"]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "run/report.json").read_text())
    assert report["verif_acc"] >= 0.95, report
    # LFW's size, so the report holds the true-accept rate papers give next to accuracy
    assert report["num_pairs"] == 6000 and 0 <= report["tar_at_far_1e-3"] <= 1, report
    for name in ("plots/roc.png", "plots/similarity_histogram.png", "plots/hardest_pairs.png", "pair_scores.csv"):
        assert (tmp_path / "run" / name).is_file(), name


def test_empty_identity_folder_stops_the_run_naming_it(cache, tmp_path, capsys):
    import shutil

    train = tmp_path / "ids"
    shutil.copytree(cache / SYNTHETIC_FACES_DIR / "train", train)
    (train / "person_9999").mkdir()
    assert main(["train", "--task", "face", "--output", str(tmp_path / "out"), "data.format=folders",
                 f"data.train={train}", f"data.pairs={cache / SYNTHETIC_FACES_DIR / 'test/pairs.txt'}", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "person_9999" in err[0], err


def test_face_stem_option_of_named_resnets():
    """model.backbone.args={stem: cifar}: the face ResNets' input stem (3x3 stride-1 conv, no max-pool) on a named
    ResNet: stages at strides 1, 2, 4, 8 instead of 4, 8, 16, 32, and the same stage weights."""
    plain, face = build_backbone("resnet18"), build_backbone("resnet18", stem="cifar")
    assert tuple(face.conv1.weight.shape) == (64, 3, 3, 3) and face.conv1.stride == (1, 1)
    with torch.no_grad():
        shapes = {k: tuple(v.shape[-2:]) for k, v in face.eval()(torch.zeros(1, 3, 112, 112)).items()}
    assert shapes == {"c2": (112, 112), "c3": (56, 56), "c4": (28, 28), "c5": (14, 14)}
    stages = {k: v.shape for k, v in face.state_dict().items() if k.startswith("layer")}
    assert stages == {k: v.shape for k, v in plain.state_dict().items() if k.startswith("layer")}


def test_eval_needs_no_training_data(run, cache, tmp_path):
    """The identity count comes from the checkpoint: evaluating on a copy of the pairs' images alone works."""
    import shutil

    report = json.loads((run / "report.json").read_text())
    shutil.copytree(cache / SYNTHETIC_FACES_DIR / "test", tmp_path / "lfw")
    assert main(["eval", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / "e"),
                 "data.format=folders", "data.train=/no/training/data", f"data.pairs={tmp_path / 'lfw/pairs.txt'}"]) == 0
    assert json.loads((tmp_path / "e/report.json").read_text())["verif_acc"] == report["verif_acc"]


def test_resume_restores_the_threshold_before_any_evaluation(run, cache, tmp_path):
    from resvision import Trainer, load_config
    from resvision.tasks import build_task

    state = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert state["meta"]["threshold"] is not None
    trainer = Trainer(build_task(load_config("face", [f"data.root={cache}", *FAST, f"output={tmp_path / 'r'}"])),
                      resume=str(run / "checkpoints/last.pt"))
    trainer.setup()
    assert trainer.data.threshold == state["meta"]["threshold"]  # a checkpoint written before the next eval keeps it


def test_training_on_photos_with_align_reads_the_aligned_copies(tmp_path, capsys):
    """data.align=true: the identity folders and the pairs' images are aligned once into the cache. An image
    without a face is left out of training and listed; in the pairs it is kept as the whole image resized, so
    every pair stays in its fold."""
    from PIL import Image
    from skimage.data import astronaut

    photo = astronaut()
    tree = tmp_path / "people"
    variants = {"astro_a": [photo, np.pad(photo, ((30, 0), (0, 30), (0, 0)), constant_values=90)],
                "astro_b": [photo[:, ::-1], np.pad(photo[:, ::-1], ((0, 40), (20, 0), (0, 0)), constant_values=200),
                            np.full((120, 120, 3), 128, np.uint8)]}  # astro_b_0003: no face
    for person, images in variants.items():
        (tree / person).mkdir(parents=True)
        for k, image in enumerate(images, 1):
            Image.fromarray(np.ascontiguousarray(image)).save(tree / person / f"{person}_{k:04d}.png")
    lines = ["astro_a\t1\t2", "astro_b\t1\t2"] * 3 + ["astro_a\t1\tastro_b\t1", "astro_a\t2\tastro_b\t2"] * 3
    (tmp_path / "pairs.txt").write_text("\n".join([*lines, "astro_b\t1\t3"]) + "\n")
    out = tmp_path / "run"
    assert main(["train", "--task", "face", "--output", str(out), "data.format=folders", f"data.train={tree}",
                 f"data.pairs={tmp_path / 'pairs.txt'}", f"data.pairs_root={tree}", "data.pairs_ext=png",
                 "data.align=true", *FAST, "train.batch_size=2"]) == 0
    assert json.loads((out / "report.json").read_text())["num_pairs"] == 13
    copies = {}
    for report in Path(os.environ["RESVISION_HOME"], "data", "aligned").glob("people-*/align_report.json"):
        copies[tuple(sorted(p.name for p in report.parent.rglob("*.png")))] = json.loads(report.read_text())
    faces = ("astro_a_0001.png", "astro_a_0002.png", "astro_b_0001.png", "astro_b_0002.png")
    assert set(copies) == {faces, (*faces, "astro_b_0003.png")}  # training copy / pairs copy with the stand-in
    assert all(r["no_face"] == ["astro_b/astro_b_0003.png"] and r["aligned"] == 4 for r in copies.values())


@pytest.mark.slow
def test_torchrun_face_report_equals_a_single_process_eval(cache, tmp_path):
    """Two processes (gloo): each evaluation image is embedded by one rank and gathered once; the report
    equals a 1-process eval of the saved last.pt, threshold included."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(root / "tools/train.py"), "--task", "face", "--output", str(run), f"data.root={cache}",
                             *FAST], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    assert main(["eval", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / "e")]) == 0
    again = json.loads((tmp_path / "e/report.json").read_text())
    for key in ("verif_acc", "roc_auc", "rank1", "verif_threshold", "num_pairs", "num_probes"):
        assert again[key] == pytest.approx(report[key], abs=1e-12), key


def test_linear_probe_from_a_checkpoint_trains_only_the_heads(run, cache, tmp_path):
    """The engine's fine-tuning policy, unchanged: the backbone starts from another run's checkpoint (its
    `backbone.*` tensors) and a linear probe leaves every backbone tensor as loaded, BN statistics included."""
    source = torch.load(run / "checkpoints/last.pt", weights_only=True)["model"]
    out = tmp_path / "probe"
    assert main(["train", "--task", "face", "--output", str(out), f"data.root={cache}", *FAST,
                 f"model.backbone.pretrained={run / 'checkpoints/last.pt'}", "finetune.strategy=linear_probe"]) == 0
    probed = torch.load(out / "checkpoints/last.pt", weights_only=True)["model"]
    backbone = [k for k in source if k.startswith("backbone.") and not k.endswith("num_batches_tracked")]
    assert backbone and all(torch.equal(probed[k], source[k]) for k in backbone)
    heads = [k for k in source if k.startswith(("embedding.", "head.")) and source[k].is_floating_point()]
    assert any(not torch.equal(probed[k], source[k]) for k in heads)
