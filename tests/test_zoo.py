"""The zoo table: parameter counts and MACs against torchvision and He et al. 2016."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from resvision.backbone import build_backbone
from resvision.backbone.resnet import CIFAR_ARCHS, PLAIN_ARCHS, TORCHVISION_ARCHS
from resvision.backbone.zoo import format_zoo_table, measure_classifier, zoo_main, zoo_names, zoo_row, zoo_table
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
