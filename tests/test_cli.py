"""The command line: train / eval / predict round trip, one-line errors with exit status 2."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_overrides

from resvision.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tiny_folder, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--task", "classification", *tiny_overrides(tiny_folder, run)]) == 0
    return run


def test_train_eval_predict_agree(trained, tiny_folder, tmp_path, capsys):
    report = json.loads((trained / "report.json").read_text())
    ckpt = trained / "checkpoints/last.pt"
    assert main(["eval", "--checkpoint", str(ckpt), "--output", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval/report.json").read_text())["top1"] == report["top1"]
    assert main(["predict", "--checkpoint", str(ckpt), "--output", str(tmp_path / "pred"), str(tiny_folder / "val")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "pred/predictions.csv")))
    assert len(rows) == 9
    correct = sum(Path(r["image"]).parent.name == r["label"] for r in rows)
    assert correct / 9 == pytest.approx(report["top1"])  # same weights, same eval transform
    single = json.loads((tmp_path / "pred/predictions.json").read_text())[0]
    assert len(single["topk"]) == 3 and abs(sum(t["prob"] for t in single["topk"]) - 1) < 1e-4


def test_predict_compile_predicts_through_the_compiled_model(trained, tiny_folder, tmp_path, monkeypatch, capsys):
    """``predict --compile`` hands the model to torch.compile and predicts with what it returns (a spy here:
    compiling takes a minute on 2 cores); the predictions equal the plain run's. With ONNX Runtime: refused."""
    import torch

    calls = []

    class Spy(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args, **kwargs):
            calls.append(len(args[0]))
            return self.model(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", lambda model, **_: Spy(model))
    ckpt = str(trained / "checkpoints/last.pt")
    for name, extra in (("plain", []), ("compiled", ["--compile"])):
        assert main(["predict", "--checkpoint", ckpt, "--output", str(tmp_path / name), *extra, str(tiny_folder / "val")]) == 0
    assert sum(calls) == 9  # every image went through the compiled module
    plain, compiled = (list(csv.DictReader(open(tmp_path / n / "predictions.csv"))) for n in ("plain", "compiled"))
    assert [r["label"] for r in compiled] == [r["label"] for r in plain]
    capsys.readouterr()
    assert main(["predict", "--checkpoint", ckpt, "--engine", "onnxruntime", "--compile", str(tiny_folder / "val")]) == 2
    assert "--compile applies to --engine torch only" in capsys.readouterr().err


def test_overrides_and_images_anywhere_among_the_options(trained, tiny_folder, tmp_path, capsys):
    """``key=value`` before and after an option (argparse alone fills a positional list only once)."""
    import yaml

    overrides = tiny_overrides(tiny_folder, tmp_path / "run")
    assert main(["train", *overrides[:5], "--task", "classification", *overrides[5:]]) == 0
    saved = yaml.safe_load((tmp_path / "run/config.yaml").read_text())
    assert saved["data"]["image_size"] == 16 and saved["train"]["epochs"] == 2  # one from each side
    images = sorted((tiny_folder / "val").rglob("*.png"))[:2]
    assert main(["predict", "--checkpoint", str(trained / "checkpoints/last.pt"), str(images[0]),
                 "--output", str(tmp_path / "pred"), str(images[1])]) == 0
    assert len(json.loads((tmp_path / "pred/predictions.json").read_text())) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):  # argparse's own usage error, exit status 2
        main(["train", "--task", "classification", "--output", str(tmp_path / "x"), "train.epochs=1", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("args, fragment", [
    (["train", "--task", "classification", "train.epoch=1"], "train.epochs"),
    (["train", "--task", "classification", "model.backbone.name=resnet5"], "resnet50"),
    (["train", "--task", "classification", "data.format=folder", "data.root=/no/such/dir"], "/no/such/dir"),
    (["train", "--task", "classification", "train.epochs=two"], "train.epochs"),
    (["train", "--task", "classification", "train.epochs=-1"], "train.epochs: must be >= 1, got -1"),
    (["train", "--task", "classification", "train.device=gpu0"], "train.device"),
    (["train", "--task", "classification", "data.val_split=0.1", "data.val_fraction=0.1"], "its new name 'data.val_fraction'"),
    (["train", "--task", "nosuchtask"], "unknown task 'nosuchtask'"),
    # cross-field checks: both keys and the fix, before anything is built
    (["train", "--task", "classification", "data.image_size=64"], "data.resize=32 is smaller than data.image_size=64"),
    (["train", "--task", "detection", "model.min_size=300", "model.max_size=200"],
     "model.max_size=200 is smaller than model.min_size=300"),
    (["train", "--task", "segmentation", "data.scale=[2.0, 0.5]"], "data.scale: must be [low, high] with low <= high"),
    (["train", "--task", "detection", "data.scale_jitter=[1.2]"], "data.scale_jitter: must be [low, high]"),
    (["train", "--task", "detection", "data.format=voc", "data.root={voc_other_classes}"], "set data.classes"),
    (["predict", "--task", "classification", "--checkpoint", "/no/such.pt", "--score-thresh", "2", "x.png"], "/no/such.pt"),
    (["eval", "--task", "classification", "--checkpoint", "/no/such.pt"], "/no/such.pt"),
    (["predict", "--task", "classification", "--checkpoint", "/no/such.pt", "x.png"], "/no/such.pt"),
])
def test_user_errors_are_one_line_with_status_2(args, fragment, capsys, tmp_path):
    if any("{voc_other_classes}" in a for a in args):  # a VOC-layout set whose objects are not VOC's 20 classes
        from resvision.datasets.shapes import shapes_dataset

        args = [a.format(voc_other_classes=shapes_dataset() / "VOC") for a in args]
    assert main([*args, "--output", str(tmp_path / "out")] if args[0] == "train" else args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0]


def test_resume_flag_without_checkpoint(tmp_path, capsys):
    assert main(["train", "--task", "classification", "--output", str(tmp_path / "fresh"), "--resume"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_tools_script_exits_2(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tools/train.py"), "--task", "classification", "nope=1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown config key 'nope'")


def test_offline_pretrained_weights_error_names_file(tmp_path, capsys):
    code = main(["train", "--task", "classification", "--output", str(tmp_path / "run"), "model.backbone.name=resnet18",
                 "model.backbone.pretrained=torchvision:IMAGENET1K_V1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "resnet18-f37072fd.pth" in err and "download.pytorch.org" in err
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["eval", "--task", "classification", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"error: cannot read checkpoint {bad}")



@pytest.mark.slow  # two training processes, ~20 s
def test_results_script_reruns_seeds_and_prints_the_readme_row(tiny_folder, tmp_path):
    """tools/results.py: one run per (threads, seed) in its own process, then the row with min–max per column."""
    overrides = [o for o in tiny_overrides(tiny_folder, tmp_path / "unused") if not o.startswith("output=")]
    out = subprocess.run([sys.executable, str(ROOT / "tools/results.py"), "--task", "classification", "--seeds", "0",
                          "1", *overrides[:3], "--threads", "1", *overrides[3:], "--output", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    reports = [json.loads((tmp_path / f"runs/t1_seed{s}/report.json").read_text()) for s in (0, 1)]
    top1 = sorted(r["top1"] for r in reports)
    row = next(line for line in out.splitlines() if line.startswith("| classification | top1 |"))
    assert f"{top1[0]:.3f}–{top1[1]:.3f}" in row and "s wall" in row


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation", "face"])
def test_config_command_prints_every_key_with_its_help_and_loads_back(task, capsys):
    import yaml

    from resvision.tasks import load_config

    assert main(["config", "--task", task, "train.epochs=3"]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text) == load_config(task, ["train.epochs=3"]).to_dict()  # a config file one can start from
    for line in text.splitlines():
        key, _, comment = line.partition("#")
        assert key.strip() and comment.strip(), line  # every key, sections included, says what it is
        if not key.rstrip().endswith(":"):  # a value: its type, then the help after ": "
            assert comment.split(": ", 1)[1].strip(), line
    epochs = next(line for line in text.splitlines() if line.strip().startswith("epochs:"))
    assert "epochs: 3" in epochs and "int, default 10:" in epochs


def test_print_config_and_dry_run_build_the_model_and_touch_nothing(tmp_path, capsys):
    import torchvision

    run = tmp_path / "run"
    args = ["train", "--task", "classification", "--output", str(run), "data.format=folder",
            f"data.root={tmp_path / 'no-such-data'}", "model.backbone.name=resnet18", "model.num_classes=7"]
    assert main([*args, "--print-config"]) == 0
    assert "name: resnet18" in capsys.readouterr().out
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    reference = sum(p.numel() for p in torchvision.models.resnet18(num_classes=7).parameters())
    assert f"model: {reference:,} parameters" in out and "7 classes from model.num_classes" in out
    assert not run.exists() and not (tmp_path / "no-such-data").exists()


def test_readme_config_commands_run_as_written(tmp_path):
    """The README's "Configs" commands as written (the console script through this interpreter), from an empty
    folder that stays empty: printing a config and a dry run write nothing."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Configs", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].split() for line in block.strip().splitlines()]
    assert len(commands) == 3
    for words in commands:
        if words[0] == ".venv/bin/resvision":
            argv = [sys.executable, "-m", "resvision.cli", *words[1:]]
        else:
            argv = [sys.executable, str(ROOT / words[1]), *words[2:]]
        result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "    name: resnet50 " in result.stdout
    assert " parameters (" in result.stdout and "in the backbone resnet50" in result.stdout
    assert not any(tmp_path.iterdir())


def test_help_and_argument_errors_answer_before_torch_is_imported():
    """`--help`, `train --help` and a mistyped option need neither torch nor any task (docs/benchmarks.md: time)."""
    code = ("import sys\nfrom resvision.cli import main\nfor argv in (['--help'], ['train', '--help'], "
            "['eval', '--help'], ['train', '--bogus']):\n    try:\n        main(argv)\n    except SystemExit:\n"
            "        pass\nprint(sorted(m for m in ('torch', 'resvision.tasks.base', 'resvision.engine') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-500:] + result.stderr[-500:]
    assert "unrecognized arguments: --bogus" in result.stderr
    import resvision as rv

    assert {"Trainer", "load", "create_model", "datasets"} <= set(dir(rv)) and rv.Trainer.__name__ == "Trainer"
