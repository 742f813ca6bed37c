"""Faster R-CNN around registry backbones: torchvision weight compatibility, FPN sizing, backbone
swaps (ResNet-50, timm), classification-to-detection transfer, fine-tuning controls."""

import pytest
import torch
import torchvision
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from resvision import build_backbone, load_config
from resvision.engine.optim import apply_finetune_policy
from resvision.errors import CheckpointError, ConfigError
from resvision.tasks import build_task
from resvision.tasks.detection import DetectorSettings, build_faster_rcnn
from resvision.tasks.detection.task import DetectionDataInfo

SMALL = dict(min_size=160, max_size=224)


def test_torchvision_fasterrcnn_resnet50_fpn_state_dict_loads_and_detects_identically():
    torch.manual_seed(0)
    body = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    reference = torchvision.models.detection.FasterRCNN(_resnet_fpn_extractor(body, 5), num_classes=91,
                                                        box_score_thresh=0.0, **SMALL).eval()
    for module in reference.modules():  # non-identity frozen BN so a misplaced one would show
        if isinstance(module, FrozenBatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1), module.running_var.uniform_(0.5, 1.5)
            module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.1, 0.1)
    ours = build_faster_rcnn(build_backbone("resnet50", norm="frozen_bn"), 91,
                             DetectorSettings(box_score_thresh=0.0, **SMALL)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    images = [torch.rand(3, 120, 150), torch.rand(3, 100, 90)]
    with torch.no_grad():
        expected, got = reference(images), ours(images)
    for e, g in zip(expected, got):
        assert len(e["boxes"]) > 10
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(g[key], e[key], atol=1e-4, rtol=0)


def test_fpn_and_heads_are_sized_from_feature_specs():
    body = build_backbone("custom", block="bottleneck", layers=[1, 1, 1], widths=[32, 64, 128], out_features=["c3", "c4"])
    model = build_faster_rcnn(body, 3, DetectorSettings(anchor_sizes=[[16], [32], [64]], **SMALL))
    assert [b[0].in_channels for b in model.backbone.fpn.inner_blocks] == [s.channels for s in body.feature_specs]
    model.eval()
    with torch.no_grad():
        features = model.backbone(torch.rand(1, 3, 64, 64))
    assert list(features) == ["c3", "c4", "pool"]
    with pytest.raises(ConfigError, match="anchor_sizes has 5 levels but the FPN has 3"):
        build_faster_rcnn(body, 3, DetectorSettings(**SMALL))



def test_fpn_features_pick_the_levels_the_detector_reads_from_a_backbone_that_outputs_more():
    """A detector reading c3..c5 of a backbone that also outputs c2 (what a joint model's segmentation decoder reads)
    is the detector built on a c3..c5 backbone: the same state dict loads strictly and detects the same boxes."""
    torch.manual_seed(0)
    spec = dict(block="basic", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64])
    settings = dict(anchor_sizes=[[16], [32], [64], [128]], box_score_thresh=0.0, **SMALL)
    wide = build_faster_rcnn(build_backbone("custom", out_features=["c2", "c3", "c4", "c5"], **spec), 3,
                             DetectorSettings(fpn_features=["c3", "c4", "c5"], **settings)).eval()
    plain = build_faster_rcnn(build_backbone("custom", out_features=["c3", "c4", "c5"], **spec), 3,
                              DetectorSettings(**settings)).eval()
    plain.load_state_dict(wide.state_dict(), strict=True)
    images = [torch.rand(3, 120, 150)]
    with torch.no_grad():
        assert list(wide.backbone(images[0][None])) == ["c3", "c4", "c5", "pool"]
        expected, got = plain(images), wide(images)
    assert len(expected[0]["boxes"]) > 10
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(got[0][key], expected[0][key])
    body = build_backbone("custom", out_features=["c3", "c4", "c5"], **spec)
    with pytest.raises(ConfigError, match=r"model.fpn_features names c2, which the backbone does not output"):
        build_faster_rcnn(body, 3, DetectorSettings(fpn_features=["c2", "c3"], **settings))
    with pytest.raises(ConfigError, match=r"model.fpn_features=\['c4', 'c3'\] must name each feature once, finest"):
        build_faster_rcnn(body, 3, DetectorSettings(fpn_features=["c4", "c3"], **settings))

def small_cfg(tmp_path, *extra):
    return load_config("detection", [f"output={tmp_path}/run", "train.progress=false", *extra])


def one_training_step(cfg):
    task = build_task(cfg)
    data = task.build_datasets()
    train = data.train
    model = task.build_model(data).train()
    apply_finetune_policy(task.backbone_of(model), cfg.finetune)
    batch = task.collate_fn()([train[i] for i in range(2)])
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    losses = task.training_step(model, batch)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in params)  # every trainable tensor is connected to the loss
    torch.optim.SGD(params, lr=0.01).step()
    return task, model, sum(not torch.equal(b, p) for b, p in zip(before, params)) / len(params)


@pytest.mark.parametrize("backbone", ["resnet50", "timm:resnet18"])
def test_backbone_swap_trains_a_step(tmp_path, backbone):
    task, model, moved = one_training_step(small_cfg(tmp_path, f"model.backbone.name={backbone}"))
    # timm zero-initialises each block's last BN gamma, so at step one the convolutions inside the
    # residual branches get exactly zero gradient; the rest (stems, shortcuts, BN, FPN, heads) moves.
    assert moved > 0.5
    assert task.backbone_of(model).feature_specs[-1].stride == 32


def test_frozen_stages_and_frozen_bn_work_unchanged(tmp_path):
    cfg = small_cfg(tmp_path, "finetune.strategy=partial", "finetune.frozen_stages=2", "model.backbone.norm=frozen_bn")
    task, model, _ = one_training_step(cfg)
    body = task.backbone_of(model)
    frozen = [p for m in body.stage_modules()[:3] for p in m.parameters()]
    assert frozen == [] or not any(p.requires_grad for p in frozen)  # frozen BN has no parameters at all
    assert all(p.requires_grad for p in body.layer3.parameters()) and all(p.requires_grad for p in model.rpn.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())


def test_classification_checkpoint_initialises_the_detector_backbone(tmp_path, tiny_folder):
    from conftest import tiny_overrides

    from resvision import Trainer
    from resvision.engine import load_checkpoint

    Trainer(build_task(load_config("classification", tiny_overrides(
        tiny_folder, tmp_path / "cls", "model.backbone.name=resnet18", "train.epochs=1")))).fit()
    ckpt = tmp_path / "cls/checkpoints/last.pt"
    task = build_task(small_cfg(tmp_path, "model.backbone.name=resnet18", f"model.backbone.pretrained={ckpt}"))
    model = task.build_model(DetectionDataInfo(classes=["a", "b"], category_ids=[1, 2]))
    trained = load_checkpoint(ckpt)["model"]
    for name, tensor in task.backbone_of(model).state_dict().items():
        assert torch.equal(tensor, trained[f"backbone.{name}"]), name


def test_checkpoint_with_other_class_count_is_refused(tmp_path):
    from resvision.engine.checkpoint import load_model_state

    task = build_task(small_cfg(tmp_path))
    two = task.build_model(DetectionDataInfo(classes=["a", "b"], category_ids=[1, 2]))
    three = task.build_model(DetectionDataInfo(classes=["a", "b", "c"], category_ids=[1, 2, 3]))
    with pytest.raises(CheckpointError, match=r"shape mismatch \(file vs model\): roi_heads.box_predictor.cls_score.weight"):
        load_model_state(three, two.state_dict(), "two_classes.pt")


def test_detector_trained_with_bn_loads_into_a_frozen_bn_detector(tmp_path):
    """torchvision's FrozenBatchNorm2d drops `num_batches_tracked` on load; so does our loader: a
    detector state dict from ordinary BN (every such run) fits a frozen-BN detector, and the
    frozen model then computes exactly what the BN model computes in eval mode."""
    from resvision.engine.checkpoint import load_model_state

    data = DetectionDataInfo(classes=["a", "b"], category_ids=[1, 2])
    bn = build_task(small_cfg(tmp_path, "model.backbone.norm=bn")).build_model(data).eval()
    for m in bn.modules():  # non-trivial statistics, so a skipped copy would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5), m.weight.data.uniform_(0.5, 1.5)
    state = bn.state_dict()
    assert any(k.endswith("num_batches_tracked") for k in state)
    frozen = build_task(small_cfg(tmp_path, "model.backbone.norm=frozen_bn")).build_model(data).eval()
    load_model_state(frozen, state, "bn_detector.pt")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(frozen.backbone(x)["c5"], bn.backbone(x)["c5"], atol=1e-5, rtol=1e-4)


def test_roi_pooling_on_every_thread_equals_torchvision(monkeypatch):
    """Training on the CPU, our RoI pooler runs torchvision's forward and backward kernels on slices of the channels
    in threads: the pooled values and the gradients reaching every FPN level equal torchvision's
    ``MultiScaleRoIAlign``, also with channels_last features, boxes on every level, a level without boxes and a
    channel count the threads do not divide evenly."""
    from torchvision.ops import MultiScaleRoIAlign

    from resvision.tasks.detection import model as detection_model

    names = ["c3", "c4", "c5"]
    g = torch.Generator().manual_seed(0)

    def boxes(n, high):
        xy = torch.rand(n, 2, generator=g) * 150
        return torch.cat([xy, xy + 2 + torch.rand(n, 2, generator=g) * high], dim=1)

    def pooled_and_grads(pool, feats, batch, weights):
        feats = {k: f.detach().clone().requires_grad_(True) for k, f in feats.items()}
        out = pool(feats, batch, [(256, 256)] * len(batch))
        (out * weights).sum().backward()
        return out.detach(), [feats[k].grad for k in names], out.grad_fn

    def graph_names(fn, seen=None):
        seen = set() if seen is None else seen
        if fn is not None and fn not in seen:
            seen.add(fn)
            for child, _ in fn.next_functions:
                graph_names(child, seen)
        return {type(f).__name__ for f in seen}

    monkeypatch.setattr(detection_model, "SPLIT_MIN_CHANNELS", 4)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        for channels, memory_format in ((50, torch.contiguous_format), (16, torch.channels_last)):
            feats = {k: torch.randn(2, channels, s, s, generator=g).to(memory_format=memory_format)
                     for k, s in zip(names, (32, 16, 8))}
            for batch, levels in (([boxes(60, 600), boxes(25, 60)], {0, 1, 2}), ([boxes(30, 12), boxes(1, 12)], {0})):
                weights = torch.randn(sum(len(b) for b in batch), channels, 7, 7, generator=g)
                pool = detection_model.ExportableRoIAlign(names, 7, 2)
                ours, our_grads, fn = pooled_and_grads(pool, feats, batch, weights)
                assert set(pool.map_levels(batch).tolist()) == levels
                theirs, their_grads, _ = pooled_and_grads(MultiScaleRoIAlign(names, 7, 2), feats, batch, weights)
                assert "_ThreadedRoIAlignBackward" in graph_names(fn)
                torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
                for mine, reference in zip(our_grads, their_grads):
                    torch.testing.assert_close(mine, reference, rtol=0, atol=0)
    finally:
        torch.set_num_threads(threads)


def test_rpn_proposals_filtered_on_every_thread_equal_torchvisions(tmp_path):
    """Training on the CPU, our RPN filters the images' proposals (clipping, small and low-scoring boxes out, NMS per
    level, the top post_nms_top_n) several images at once: the boxes and scores equal torchvision's
    ``RegionProposalNetwork.filter_proposals`` on the same inputs, with overlapping boxes (NMS removes some), boxes
    outside the image, tiny boxes and more images than threads; evaluation runs torchvision's code."""
    from torchvision.models.detection.rpn import RegionProposalNetwork

    from resvision.tasks.detection.model import ThreadedProposals

    model = build_task(small_cfg(tmp_path)).build_model(DetectionDataInfo(classes=["a", "b"], category_ids=[1, 2]))
    rpn = model.rpn
    assert type(rpn) is ThreadedProposals
    rpn.score_thresh = 0.2  # some boxes fall below it
    g = torch.Generator().manual_seed(0)
    per_level, images = [300, 80, 20], 5
    corners = torch.rand(images, sum(per_level), 2, generator=g) * 140 - 10  # some outside the 128 x 120 images
    sizes = torch.rand(images, sum(per_level), 2, generator=g) * 40
    sizes[:, ::17] = 1e-4  # tiny boxes, removed as too small
    proposals = torch.cat([corners, corners + sizes], dim=2)
    objectness = torch.randn(images * sum(per_level), 1, generator=g)
    shapes = [(120, 128)] * images

    def both() -> tuple:
        mine = rpn.filter_proposals(proposals, objectness, shapes, per_level)
        theirs = RegionProposalNetwork.filter_proposals(rpn, proposals, objectness, shapes, per_level)
        return mine, theirs

    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        for training in (True, False):
            rpn.train(training)
            (boxes, scores), (their_boxes, their_scores) = both()
            assert len(boxes) == images
            for mine, theirs in zip(boxes + scores, their_boxes + their_scores):
                torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
            kept = sum(len(b) for b in boxes)
            assert 0 < kept < min(rpn.post_nms_top_n(), len(objectness) // images) * images  # NMS and filters acted
    finally:
        torch.set_num_threads(threads)
