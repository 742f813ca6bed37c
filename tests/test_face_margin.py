"""Margin heads: ArcFace / CosFace / combined target logits against the formulas computed with ``math`` on
hand-made cosines, insightface's theta + m > pi branch, easy margin, label -1 rows, finite gradients at
cos = +-1, and MarginHead's cosine against a hand-computed normalised dot product."""

import math

import pytest
import torch

from resvision.errors import ConfigError
from resvision.tasks.face.margin import ArcFace, CombinedMargin, CosFace, MarginHead, build_margin

S, M = 64.0, 0.5
# One row per sample, 3 classes; the target (diagonal, labels 0, 1, 2) cosines are 0.5, -0.9 and 0.99.
# cos(pi - 0.5) = -0.8776: -0.9 lies past it, so ArcFace takes the linear branch on row 1.
COS = [[0.5, 0.2, -0.3],
       [0.1, -0.9, 0.4],
       [-0.7, 0.6, 0.99]]
LABELS = [0, 1, 2]


def _cos(rows=COS):
    return torch.tensor(rows, dtype=torch.float64)


def _labels(values=LABELS):
    return torch.tensor(values)


def _expected(target_fn, rows=COS, labels=LABELS):
    """s * c everywhere, s * target_fn(c) at (i, labels[i]) unless the label is -1."""
    out = [[S * c for c in row] for row in rows]
    for i, y in enumerate(labels):
        if y != -1:
            out[i][y] = S * target_fn(rows[i][y])
    return torch.tensor(out, dtype=torch.float64)


def _arc(c, m=M):
    if c > math.cos(math.pi - m):
        return math.cos(math.acos(c) + m)
    return c - math.sin(math.pi - m) * m


def test_arcface_hand_values_and_pi_branch():
    logits = ArcFace(s=S, m=M)(_cos(), _labels())
    torch.testing.assert_close(logits, _expected(_arc), rtol=0, atol=1e-9)
    # The branch by hand: row 1 target = 64 * (-0.9 - sin(pi - 0.5) * 0.5) = 64 * (-0.9 - 0.479426 * 0.5)
    assert logits[1, 1].item() == pytest.approx(64 * (-0.9 - 0.4794255386 * 0.5), abs=1e-7)
    # ... not the raw cos(theta + m) = cos(acos(-0.9) + 0.5), which lies above it (the curve turned back up).
    assert logits[1, 1].item() < 64 * math.cos(math.acos(-0.9) + 0.5) - 1
    # Rows 0 and 2 are the plain angular margin.
    assert logits[0, 0].item() == pytest.approx(64 * math.cos(math.acos(0.5) + 0.5), abs=1e-9)
    assert logits[2, 2].item() == pytest.approx(64 * math.cos(math.acos(0.99) + 0.5), abs=1e-9)


def test_arcface_target_logit_is_monotonic():
    # With the branch the target logit never increases as theta grows (cos decreases); without it the
    # logit would rise again near cos = -1 (checked: the raw curve is not monotonic on this grid).
    c = torch.linspace(-1, 1, 4001, dtype=torch.float64)
    logits = ArcFace(s=1.0, m=M)(c.unsqueeze(1), torch.zeros(len(c), dtype=torch.long))[:, 0]
    assert (logits.diff() >= 0).all()
    assert not (torch.cos(torch.acos(c) + M).diff() >= 0).all()
    # insightface's branch is not continuous: at cos = cos(pi - m) the logit steps down from cos(pi) = -1
    # to cos(pi - m) - sin(pi - m) * m = -0.87758 - 0.47943 * 0.5 = -1.11730.
    edge = math.cos(math.pi - M)
    left, right = (ArcFace(s=1.0, m=M)(torch.tensor([[c]], dtype=torch.float64), _labels([0])).item()
                   for c in (edge - 1e-9, edge + 1e-9))
    assert right == pytest.approx(-1.0, abs=1e-6)
    assert left == pytest.approx(-1.11730, abs=1e-5)


def test_arcface_easy_margin():
    # Margin only where cos > 0: 0.5 and 0.99 get it, -0.9 stays as is (no branch); 0 exactly gets none.
    rows = [*COS, [0.0, 0.3, 0.3]]
    labels = [*LABELS, 0]
    logits = ArcFace(s=S, m=M, easy_margin=True)(_cos(rows), _labels(labels))
    expected = _expected(lambda c: math.cos(math.acos(c) + M) if c > 0 else c, rows, labels)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-9)
    assert logits[1, 1].item() == pytest.approx(64 * -0.9)


def test_cosface_hand_values():
    logits = CosFace(s=S, m=0.35)(_cos(), _labels())
    torch.testing.assert_close(logits, _expected(lambda c: c - 0.35), rtol=0, atol=1e-9)
    assert logits[2, 2].item() == pytest.approx(64 * (0.99 - 0.35))


def test_combined_margin():
    # General form: cos(m1 * acos(c) + m2) - m3, no branch (insightface's combined margin has none).
    m1, m2, m3 = 0.9, 0.4, 0.15
    logits = CombinedMargin(s=S, m1=m1, m2=m2, m3=m3)(_cos(), _labels())
    torch.testing.assert_close(logits, _expected(lambda c: math.cos(m1 * math.acos(c) + m2) - m3),
                               rtol=0, atol=1e-7)
    # m1 = 1, m3 = 0 is ArcFace, theta + m > pi branch included (as insightface's CombinedMarginLoss).
    torch.testing.assert_close(CombinedMargin(s=S, m1=1.0, m2=M, m3=0.0)(_cos(), _labels()),
                               _expected(_arc), rtol=0, atol=1e-9)
    # m1 = 1, m2 = 0 is CosFace.
    torch.testing.assert_close(CombinedMargin(s=S, m1=1.0, m2=0.0, m3=0.35)(_cos(), _labels()),
                               _expected(lambda c: c - 0.35), rtol=0, atol=1e-7)


@pytest.mark.parametrize("margin", [ArcFace(S, M), ArcFace(S, M, easy_margin=True), CosFace(S, 0.35),
                                    CombinedMargin(S, 0.9, 0.4, 0.15)], ids=repr)
def test_label_minus_one_rows_are_only_scaled(margin):
    labels = [0, -1, -1]
    logits = margin(_cos(), _labels(labels))
    torch.testing.assert_close(logits[1:], S * _cos()[1:], rtol=0, atol=0)
    assert logits[0, 0].item() != pytest.approx(S * 0.5)  # the labelled row did get its margin
    # The inputs are not modified in place (insightface's torch losses write into their argument).
    cos = _cos()
    margin(cos, _labels())
    torch.testing.assert_close(cos, _cos(), rtol=0, atol=0)


@pytest.mark.parametrize("margin", [ArcFace(S, M), ArcFace(S, M, easy_margin=True), CosFace(S, 0.35),
                                    CombinedMargin(S, 0.9, 0.4, 0.15), CombinedMargin(S, 1.0, 0.5, 0.0)],
                         ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_at_plus_minus_one(margin, dtype):
    # Targets exactly +1 and -1, a -1-labelled row at +1 (its unused margin branch must not leak NaN
    # through torch.where), and cosines slightly outside [-1, 1] (rounding of normalised products).
    cos = torch.tensor([[1.0, -1.0], [0.3, -1.0], [1.0, 0.2], [1.0 + 1e-7, -1.0 - 1e-7]], dtype=dtype,
                       requires_grad=True)
    logits = margin(cos, torch.tensor([0, 1, -1, 0]))
    assert torch.isfinite(logits).all()
    weights = torch.arange(1, 9, dtype=dtype).view(4, 2)  # a generic upstream gradient
    (logits * weights).sum().backward()
    assert torch.isfinite(cos.grad).all(), cos.grad
    # Non-target entries have d logit / d c = s exactly, so gradients flow through the scatter.
    assert cos.grad[0, 1].item() == pytest.approx(S * 2)
    assert cos.grad[2, 0].item() == pytest.approx(S * 5)  # label -1: plain s * c
    assert cos.grad[2, 1].item() == pytest.approx(S * 6)


def test_arcface_gradient_matches_the_derivative():
    # d/dc s * cos(acos(c) + m) = s * (cos m + c sin m / sqrt(1 - c^2)); past the branch it is s.
    cos = torch.tensor([[0.5], [-0.95]], dtype=torch.float64, requires_grad=True)
    ArcFace(S, M)(cos, _labels([0, 0])).sum().backward()
    assert cos.grad[0, 0].item() == pytest.approx(S * (math.cos(M) + 0.5 * math.sin(M) / math.sqrt(0.75)))
    assert cos.grad[1, 0].item() == pytest.approx(S)


def test_half_precision_input_gives_float32_logits():
    cos = torch.tensor(COS, dtype=torch.float16)
    logits = ArcFace(S, M)(cos, _labels())
    assert logits.dtype == torch.float32
    expected = _expected(_arc, rows=cos.double().tolist()).float()
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-3)


def test_margin_head_cosine_and_forward():
    head = MarginHead(embedding_size=2, num_classes=3, margin=CosFace(S, 0.35))
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    emb = torch.tensor([[3.0, 4.0], [-2.0, 0.0]])
    # By hand: (3, 4)/5 = (0.6, 0.8); centres (1, 0), (0, 1), (1, 1)/sqrt(2).
    # Row 0: 0.6, 0.8, (0.6 + 0.8)/sqrt(2); row 1 = (-1, 0): -1, 0, -1/sqrt(2).
    r2 = math.sqrt(2)
    expected = torch.tensor([[0.6, 0.8, 1.4 / r2], [-1.0, 0.0, -1 / r2]])
    torch.testing.assert_close(head.cosine(emb), expected, rtol=0, atol=1e-6)
    logits = head(emb, torch.tensor([1, 2]))
    torch.testing.assert_close(logits, S * (expected - torch.tensor([[0, 0.35, 0], [0, 0, 0.35]])),
                               rtol=0, atol=1e-4)
    # Gradients reach both the embeddings and the class centres.
    emb.requires_grad_(True)
    torch.nn.functional.cross_entropy(head(emb, torch.tensor([1, 2])), torch.tensor([1, 2])).backward()
    assert emb.grad.abs().sum() > 0 and head.weight.grad.abs().sum() > 0
    assert torch.isfinite(head.weight.grad).all()


def test_margin_head_init_and_no_margin_parameters():
    torch.manual_seed(0)
    head = MarginHead(128, 500, ArcFace())
    assert head.weight.shape == (500, 128)
    assert head.weight.mean().abs().item() < 1e-3
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert [name for name, _ in head.named_parameters()] == ["weight"]


def test_build_margin():
    arc = build_margin("arcface", s=32.0, m=0.4, easy_margin=True)
    assert isinstance(arc, ArcFace) and (arc.s, arc.m, arc.easy_margin) == (32.0, 0.4, True)
    cos = build_margin("cosface", s=30.0, m=0.3)
    assert isinstance(cos, CosFace) and (cos.s, cos.m) == (30.0, 0.3)
    comb = build_margin("combined", s=64.0, m=0.3, m1=1.0, m3=0.2)
    assert isinstance(comb, CombinedMargin) and (comb.m1, comb.m2, comb.m3) == (1.0, 0.3, 0.2)
    with pytest.raises(ConfigError, match=r"'sphereface'.*arcface, cosface, combined") as info:
        build_margin("sphereface", s=64.0, m=0.5)
    assert "\n" not in str(info.value)


def test_margin_head_cosines_are_float32_under_bf16_autocast():
    """bf16 cosines near 1 are off by ~4e-3; the head computes them outside autocast, in float32."""
    from resvision.tasks.face.margin import MarginHead

    torch.manual_seed(0)
    head = MarginHead(64, 10, ArcFace(s=64.0, m=0.5))
    emb = head.weight[:4].detach() + 1e-3 * torch.randn(4, 64)  # cosines close to 1 with their own class
    expected = torch.nn.functional.normalize(emb.double(), dim=1) @ torch.nn.functional.normalize(head.weight.double(), dim=1).T
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = head.cosine(emb)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=0)
