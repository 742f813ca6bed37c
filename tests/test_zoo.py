"""The zoo table: parameter counts and MACs against torchvision and He et al. 2016."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from resvision.backbone import build_backbone
from resvision.backbone.resnet import CIFAR_ARCHS, PLAIN_ARCHS, TORCHVISION_ARCHS
from resvision.backbone.zoo import (format_zoo_table, measure_classifier, measure_throughput, zoo_main, zoo_names,
                                    zoo_row, zoo_table)
from resvision.errors import ConfigError

# He et al. 2016: CIFAR-10 parameter counts (Table 6) and ImageNet multiply-adds (Table 1, "FLOPs").
PAPER_CIFAR_PARAMS_M = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85, "resnet110": 1.7}
PAPER_GMACS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}



@pytest.fixture(scope="module")
def imagenet_rows() -> dict[str, dict]:
    return {row["name"]: row for row in zoo_table(list(TORCHVISION_ARCHS))}


def test_zoo_lists_fixed_architectures() -> None:
    assert zoo_names() == [*TORCHVISION_ARCHS, *CIFAR_ARCHS, *PLAIN_ARCHS]
    with pytest.raises(ConfigError):
        zoo_row("custom")


@pytest.mark.parametrize("name", list(TORCHVISION_ARCHS))
def test_params_equal_torchvision(imagenet_rows: dict, name: str) -> None:
    with torch.device("meta"):
        reference = torchvision.models.get_model(name)
    assert imagenet_rows[name]["params"] == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("name", list(TORCHVISION_ARCHS))
def test_macs_equal_torchvision_metadata(imagenet_rows: dict, name: str) -> None:
    # torchvision's weight metadata "_ops" is GMACs at 224x224 (it calls them GFLOPS), 3 decimals.
    ops = torchvision.models.get_model_weights(name).DEFAULT.meta["_ops"]
    assert imagenet_rows[name]["MACs_G"] == pytest.approx(ops, abs=2e-3)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet101", "resnet152"])
def test_macs_match_paper(imagenet_rows: dict, name: str) -> None:
    assert imagenet_rows[name]["MACs_G"] == pytest.approx(PAPER_GMACS[name], rel=0.05)


def test_resnet50_macs_v1_vs_v1_5(imagenet_rows: dict) -> None:
    """The paper's 3.8 G is ResNet-50 v1 (stride on the first 1x1); torchvision's v1.5 costs 4.09 G."""
    with torch.device("meta"):
        v1 = build_backbone("custom", block="bottleneck", layers=[3, 4, 6, 3], stride_in_1x1=True)
    params, macs = measure_classifier(v1, 224, 1000)
    assert macs / 1e9 == pytest.approx(PAPER_GMACS["resnet50"], rel=0.05)
    assert params == imagenet_rows["resnet50"]["params"]  # same weights, different placement of the stride
    assert imagenet_rows["resnet50"]["MACs_G"] == pytest.approx(4.09, abs=0.01)


@pytest.mark.parametrize("name", list(CIFAR_ARCHS))
def test_cifar_params_match_paper(name: str) -> None:
    row = zoo_row(name)
    digits = 1 if row["params"] >= 1e6 else 2  # the paper prints 0.27M ... 0.85M, then 1.7M
    assert round(row["params"] / 1e6, digits) == PAPER_CIFAR_PARAMS_M[name]
    assert (row["input"], row["num_classes"]) == (32, 10)
    assert [f["stride"] for f in row["features"]] == [1, 2, 4]


def test_formats(imagenet_rows: dict) -> None:
    rows = [imagenet_rows["resnet18"], imagenet_rows["resnet50"]]
    text = format_zoo_table(rows, "text").splitlines()
    assert len(text) == 3 and text[1].startswith("resnet18") and "11.69" in text[1]
    assert text[2].index("25.56") + 5 == text[1].index("11.69") + 5  # right-aligned numbers
    markdown = format_zoo_table(rows, "markdown").splitlines()
    assert markdown[0].startswith("| model") and markdown[1].startswith("|---") and len(markdown) == 4
    assert json.loads(format_zoo_table(rows, "json"))[1]["name"] == "resnet50"
    with pytest.raises(ConfigError):
        format_zoo_table(rows, "html")


def test_zoo_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo_main(["--format", "json", "resnet20"]) == 0
    printed = json.loads(capsys.readouterr().out)
    # 3x3 convs 432 + 6*2304 + 4608 + 5*9216 + 18432 + 5*36864, BN 2*(16 + 6*16 + 6*32 + 6*64), fc 650.
    assert printed[0]["name"] == "resnet20" and printed[0]["params"] == 269_722
    with pytest.raises(SystemExit):
        zoo_main(["--format", "html"])


def test_zoo_unknown_name_is_one_line_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo_main(["resnet5"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: unknown backbone 'resnet5' for the zoo; did you mean resnet5")
    assert "resnet50" in captured.err and captured.err.count("\n") == 1


# --- zoo --measure: images/s of the classifiers on this CPU --------------------------------------------------

MEASURED = ["resnet20", "plain20"]  # the cheapest nets: 32x32, 0.04 GMACs each


def test_measure_throughput_rates_are_positive_and_threads_restored() -> None:
    threads = torch.get_num_threads()
    rates = measure_throughput(MEASURED, batch=2, windows=1, threads=1)
    assert torch.get_num_threads() == threads
    assert list(rates) == MEASURED
    for name in MEASURED:
        assert rates[name]["infer_img_s"] > 0 and rates[name]["train_img_s"] > 0
        assert len(rates[name]["infer_windows"]) == len(rates[name]["train_windows"]) == 1


def test_measure_throughput_median_of_injected_clock() -> None:
    """Window k lasts durations[k] fake seconds; the rates must be batch / duration, medians of the kept rounds."""
    batch, windows, warmup = 2, 3, 1
    order = [(n, mode) for n in MEASURED for mode in ("infer", "train")]  # the documented run order of a round
    rounds = warmup + windows
    durations = [0.5 + ((7 * k) % 11) / 4 for k in range(rounds * len(order))]  # distinct, not monotone
    ticks = [0.0]
    for d in durations:  # alternate reads the clock at each window's start and end
        ticks += [ticks[-1] + 1.0, ticks[-1] + 1.0 + d]
    ticks = iter(ticks[1:])
    rates = measure_throughput(MEASURED, batch=batch, windows=windows, warmup=warmup, threads=1,
                               clock=lambda: next(ticks))
    assert next(ticks, None) is None  # every tick used: exactly two clock reads per window
    for j, (name, mode) in enumerate(order):
        kept = [batch / durations[r * len(order) + j] for r in range(warmup, rounds)]
        assert rates[name][f"{mode}_windows"] == pytest.approx(kept, rel=1e-12)
        assert rates[name][f"{mode}_img_s"] == pytest.approx(sorted(kept)[1], rel=1e-12)


def test_zoo_measure_markdown_and_plot(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "images" / "zoo.png"
    assert zoo_main(["--measure", "--format", "markdown", "--batch", "2", "--windows", "1", "--threads", "1",
                     "--plot", str(plot), *MEASURED]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[5:7] == ["infer img/s", "train img/s"] and len(lines) == 2 + len(MEASURED)
    assert lines[1].count("---:") == 6
    plain = format_zoo_table(zoo_table(MEASURED), "markdown").splitlines()
    for line, unmeasured in zip(lines[2:], plain[2:]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:5] + cells[7:] == [c.strip() for c in unmeasured.strip("|").split("|")]
        assert float(cells[5]) > 0 and float(cells[6]) > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_zoo_measure_json_image_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo_main(["--measure", "--format", "json", "--image-size", "16", "--batch", "1", "--windows", "3",
                     "--threads", "1", "resnet20"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["input"] == 16 and row["batch"] == 1 and row["threads"] == 1
    assert row["MACs"] == measure_classifier(build_backbone("resnet20"), 16, 10)[1]  # MACs at the measured size
    for mode in ("infer", "train"):  # the median of three windows is the middle one
        assert row[f"{mode}_img_s"] == sorted(row[f"{mode}_windows"])[1]


@pytest.mark.parametrize("argv, message", [
    (["--measure", "--batch", "0", "resnet20"], "error: zoo: --batch must be an integer >= 1, got 0\n"),
    (["--measure", "--windows", "-1", "resnet20"], "error: zoo: --windows must be an integer >= 1, got -1\n"),
    (["--batch", "2", "resnet20"], "error: zoo: --batch given without --measure (measuring options)\n"),
])
def test_zoo_measure_bad_options_one_line_status_2(argv: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == message
