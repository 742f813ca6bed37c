"""The shared engine: exact resume, divergence, fine-tuning policy, checkpoints, run directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides

from resvision import Trainer, build_task, load_config
from resvision.engine import Callback, TrainingDiverged, load_checkpoint
from resvision.errors import CheckpointError, ConfigError, UserError


def make_trainer(root, run_dir, *extra, **kw):
    return Trainer(build_task(load_config("classification", tiny_overrides(root, run_dir, *extra))), **kw)


class StopAfterEpoch(Callback):
    """Simulates a kill right after epoch ``n`` was checkpointed."""

    def __init__(self, n):
        self.n = n

    def on_epoch_end(self, trainer):
        if trainer.epoch + 1 == self.n:
            raise KeyboardInterrupt


def weights(path):
    return load_checkpoint(path)["model"]


def test_resume_is_bit_exact(tiny_folder, tmp_path):
    # EMA, dropout, label smoothing and random crops all draw randomness: resume must replay it.
    extra = ["train.ema=true", "train.ema_decay=0.9", "model.dropout=0.2", "model.label_smoothing=0.1", "train.epochs=3"]
    make_trainer(tiny_folder, tmp_path / "straight", *extra).fit()
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tiny_folder, tmp_path / "resumed", *extra, callbacks=[StopAfterEpoch(1)]).fit()
    assert load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")["epoch"] == 1
    make_trainer(tiny_folder, tmp_path / "resumed", *extra, resume="auto").fit()
    a, b = (load_checkpoint(tmp_path / f"{d}/checkpoints/last.pt") for d in ("straight", "resumed"))
    assert a["global_step"] == b["global_step"] == 9
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    rows = [json.loads(r) for r in (tmp_path / "resumed/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["split"] == "val"] == [0, 1, 2]  # no duplicated epoch rows


def test_run_directory_contents(tiny_folder, tmp_path):
    metrics = make_trainer(tiny_folder, tmp_path / "run").fit()
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "report.json", "checkpoints/last.pt", "checkpoints/best.pt",
                 "plots/loss.png", "plots/lr.png", "plots/metrics.png", "plots/confusion_matrix.png",
                 "plots/gradcam.png", "per_class.csv", "confusion_matrix.csv"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").iterdir())
    report = json.loads((run / "report.json").read_text())
    assert report["top1"] == metrics["top1"] and "top5" in report
    assert load_config(run / "config.yaml") == load_config("classification", tiny_overrides(tiny_folder, run))


class NanAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_epoch_start(self, trainer):
        original = trainer.task.training_step

        def poisoned(model, batch):
            losses = original(model, batch)
            if trainer.global_step >= self.step:
                losses["ce"] = losses["ce"] * float("nan")
            return losses

        trainer.task.training_step = poisoned


def test_nan_loss_stops_with_one_line_and_keeps_last_good_checkpoint(tiny_folder, tmp_path):
    trainer = make_trainer(tiny_folder, tmp_path / "run", callbacks=[NanAt(4)])
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit()
    message = str(err.value)
    assert "nan" in message and "optimizer step 4" in message and "last.pt" in message and "\n" not in message
    assert f"lr {trainer.lr:.3g}" in message and "lower optim.lr" in message  # the rate it happened at, what to try
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["epoch"] == 1  # written after epoch 1, untouched


class ScaleLossFrom(Callback):
    """From optimizer step ``step`` on, report the loss ``factor`` x higher, as a diverging run would."""

    def __init__(self, step, factor):
        self.step, self.factor = step, factor

    def on_step_end(self, trainer):
        if trainer.global_step >= self.step:
            trainer.step_losses["loss"] *= self.factor

    def on_epoch_end(self, trainer):
        if trainer.global_step >= self.step:
            trainer.epoch_losses["loss"] *= self.factor


@pytest.mark.parametrize("factor, warned", [(10.0, True), (1.0, False)])
def test_a_loss_far_above_its_early_level_is_warned_about_once(tiny_folder, tmp_path, caplog, factor, warned):
    from resvision.engine.callbacks import DivergenceWatch

    steps = DivergenceWatch.early_steps
    trainer = make_trainer(tiny_folder, tmp_path / "run", "train.epochs=8", "train.batch_size=4",
                           callbacks=[ScaleLossFrom(steps + 1, factor)])
    trainer.callbacks.insert(0, trainer.callbacks.pop())  # scale before the watch reads the losses
    with caplog.at_level("WARNING", logger="resvision"):
        trainer.fit()
    warnings = [r.getMessage() for r in caplog.records if "probably diverging" in r.getMessage()]
    assert len(warnings) == (1 if warned else 0)  # once, not every epoch
    if warned:
        assert "optim.lr (now 0.05)" in warnings[0]


def test_a_log_file_gets_one_plain_line_per_epoch_instead_of_a_bar(tiny_folder, tmp_path):
    """stderr redirected (not a terminal): no tqdm redraws (carriage returns), one line per epoch with ETA."""
    log = tmp_path / "train.log"
    with open(log, "w") as stream:
        subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "tools/train.py"), "--task",
                        "classification", *tiny_overrides(tiny_folder, tmp_path / "run", "train.progress=true")],
                       stdout=stream, stderr=subprocess.STDOUT, check=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = log.read_text()
    assert "\r" not in text
    epochs = [line for line in text.splitlines() if " loss " in line and " ETA " in line]
    assert len(epochs) == 2 and "epoch 1/2" in epochs[0] and "img/s" in epochs[0]
    assert sum("validation top1" in line for line in text.splitlines()) == 2


def test_resume_without_checkpoint_is_an_error(tiny_folder, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        make_trainer(tiny_folder, tmp_path / "empty", resume="auto").fit()


def test_a_malformed_monitor_fails_when_the_trainer_is_built_before_any_run_directory(tiny_folder, tmp_path):
    with pytest.raises(ConfigError, match=r"train.monitor='0.5 \* \* top1': '0.5 \* \* top1' is not a metric name"):
        make_trainer(tiny_folder, tmp_path / "run", "train.monitor=0.5 * * top1")
    assert not (tmp_path / "run").exists()


def test_a_monitor_naming_no_metric_of_the_task_fails_before_any_run_directory(tiny_folder, tmp_path):
    trainer = make_trainer(tiny_folder, tmp_path / "run", "train.monitor=0.5*top1 + 0.5*top_1")
    with pytest.raises(ConfigError, match=r"train.monitor='0.5\*top1 \+ 0.5\*top_1': 'top_1' is not a metric of this run "
                                          r"\(f1_macro, num_samples, precision_macro, recall_macro, top1, top5\)"):
        trainer.fit()
    assert not (tmp_path / "run").exists()


def test_checkpoint_of_other_backbone_or_task_is_refused(tiny_folder, tmp_path):
    make_trainer(tiny_folder, tmp_path / "run", "train.epochs=1").fit()
    ckpt = tmp_path / "run/checkpoints/last.pt"
    other = make_trainer(tiny_folder, tmp_path / "other", "model.backbone.name=resnet32")
    with pytest.raises(CheckpointError, match="resnet20"):
        other.evaluate(ckpt)
    state = load_checkpoint(ckpt)
    state["backbone"] = "resnet32"  # same name, different weights: the key names must be reported
    torch.save(state, tmp_path / "forged.pt")
    with pytest.raises(CheckpointError, match="missing: .*layer1.3"):
        other.evaluate(tmp_path / "forged.pt")
    state["task"] = "detection"
    torch.save(state, tmp_path / "task.pt")
    with pytest.raises(CheckpointError, match="'detection' checkpoint"):
        other.evaluate(tmp_path / "task.pt")


def test_evaluate_reproduces_training_metrics(tiny_folder, tmp_path):
    metrics = make_trainer(tiny_folder, tmp_path / "run", "train.epochs=1").fit()
    again = make_trainer(tiny_folder, tmp_path / "eval").evaluate(tmp_path / "run/checkpoints/last.pt")
    assert again["top1"] == metrics["top1"] and again["num_samples"] == 9
    # the library path with the training config (its run directory): refused, the run's report kept whole
    report = (tmp_path / "run/report.json").read_bytes()
    with pytest.raises(UserError, match="already holds a run or a report"):
        make_trainer(tiny_folder, tmp_path / "run").evaluate(tmp_path / "run/checkpoints/last.pt")
    assert (tmp_path / "run/report.json").read_bytes() == report


# ------------------------------------------------------------------------ fine-tuning policy
class Snapshot(Callback):
    """Backbone/head tensors (parameters and BN buffers) at train start and after each epoch."""

    def __init__(self):
        self.states = []

    def _grab(self, trainer):
        self.states.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})

    on_train_start = _grab
    on_epoch_end = _grab


def changed(before, after, prefix):
    return {k for k in before if k.startswith(prefix) and before[k].is_floating_point() and not torch.equal(before[k], after[k])}


def run_policy(tiny_folder, tmp_path, *extra):
    snap = Snapshot()
    make_trainer(tiny_folder, tmp_path / "run", *extra, callbacks=[snap]).fit()
    return snap.states


def test_linear_probe_trains_only_the_head(tiny_folder, tmp_path):
    states = run_policy(tiny_folder, tmp_path, "finetune.strategy=linear_probe", "train.epochs=1")
    assert not changed(states[0], states[-1], "backbone.")  # weights and BN running stats
    assert changed(states[0], states[-1], "fc.") == {"fc.weight", "fc.bias"}


def test_partial_freezes_stem_and_first_stages(tiny_folder, tmp_path):
    states = run_policy(tiny_folder, tmp_path, "finetune.strategy=partial", "finetune.frozen_stages=1", "train.epochs=1")
    moved = changed(states[0], states[-1], "backbone.")
    assert not any(k.startswith(("backbone.conv1", "backbone.bn1", "backbone.layer1")) for k in moved)
    assert any(k.startswith("backbone.layer2") for k in moved) and any(k.startswith("backbone.layer3") for k in moved)


def test_norm_eval_keeps_bn_statistics(tiny_folder, tmp_path):
    states = run_policy(tiny_folder, tmp_path, "finetune.norm_eval=true", "train.epochs=1")
    moved = changed(states[0], states[-1], "backbone.")
    assert not any("running_" in k for k in moved)
    assert "backbone.layer1.0.conv1.weight" in moved and "backbone.layer1.0.bn1.weight" in moved


def test_scheduled_unfreezing(tiny_folder, tmp_path):
    states = run_policy(tiny_folder, tmp_path, "finetune.strategy=partial", "finetune.frozen_stages=3",
                        "finetune.unfreeze_at={1: [3]}", "train.epochs=2")
    assert not changed(states[0], states[1], "backbone.")  # epoch 0: whole backbone (stages 0..3) frozen
    second = changed(states[1], states[2], "backbone.")
    assert second and all(k.startswith("backbone.layer3") for k in second)  # epoch 1: only stage 3 thawed


def test_backbone_lr_mult_and_layer_decay_groups(tiny_folder, tmp_path):
    trainer = make_trainer(tiny_folder, tmp_path / "run", "finetune.backbone_lr_mult=0.1", "finetune.layer_decay=0.5",
                           "optim.weight_decay=0.01")
    trainer.setup()
    model, opt = trainer.model, trainer.optimizer
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    stages = model.backbone.stage_modules()  # stem, layer1..3
    for i, stage in enumerate(stages):
        for p in stage.parameters():
            assert group_of[id(p)]["lr_scale"] == pytest.approx(0.1 * 0.5 ** (len(stages) - i))
            assert group_of[id(p)]["lr"] == pytest.approx(0.05 * 0.1 * 0.5 ** (len(stages) - i))
    assert group_of[id(model.fc.weight)]["lr_scale"] == 1.0
    assert group_of[id(model.fc.weight)]["weight_decay"] == 0.01
    assert group_of[id(model.fc.bias)]["weight_decay"] == 0.0  # no decay on biases ...
    assert group_of[id(model.backbone.bn1.weight)]["weight_decay"] == 0.0  # ... and norm weights


def test_backbone_lr_mult_zero_freezes_backbone_weights_only(tiny_folder, tmp_path):
    states = run_policy(tiny_folder, tmp_path, "finetune.backbone_lr_mult=0", "optim.weight_decay=0", "train.epochs=1")
    moved = changed(states[0], states[-1], "backbone.")
    assert moved and all("running_" in k for k in moved)  # BN statistics still adapt; weights do not
    assert changed(states[0], states[-1], "fc.")


@pytest.mark.parametrize("overrides, fragment", [
    (["finetune.strategy=partial"], "frozen_stages >= 0"),
    (["finetune.frozen_stages=1"], "strategy=partial"),
    (["finetune.strategy=partial", "finetune.frozen_stages=9"], "stages 0..3"),
    (["finetune.unfreeze_at={1: [7]}"], "unfreeze_at.1"),
    (["finetune.unfreeze_at={30: [1]}"], r"unfreeze_at.30: epoch 30 is not in 0..1 \(this run has 2 epochs"),
    (["finetune.unfreeze_at={-1: [1]}"], "unfreeze_at.-1: epoch -1 is not in"),
])
def test_policy_errors(tiny_folder, tmp_path, overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make_trainer(tiny_folder, tmp_path / "run", *overrides).setup()
    assert not (tmp_path / "run").exists()  # found before anything is written


def test_grad_accumulation_matches_big_batch(tiny_folder, tmp_path):
    # frozen BN: batch statistics would otherwise differ between 2x4 and 1x8 images.
    common = ["model.backbone.norm=frozen_bn", "train.epochs=1", "data.scale=[1.0, 1.0]", "model.label_smoothing=0"]
    make_trainer(tiny_folder, tmp_path / "big", *common, "train.batch_size=8").fit()
    make_trainer(tiny_folder, tmp_path / "acc", *common, "train.batch_size=4", "train.grad_accum=2").fit()
    a, b = weights(tmp_path / "big/checkpoints/last.pt"), weights(tmp_path / "acc/checkpoints/last.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4)


def test_existing_run_is_never_overwritten(tiny_folder, tmp_path):
    make_trainer(tiny_folder, tmp_path / "run", "train.epochs=1").fit()
    before = (tmp_path / "run/checkpoints/last.pt").read_bytes()
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        make_trainer(tiny_folder, tmp_path / "run", "train.epochs=1").fit()
    assert (tmp_path / "run/checkpoints/last.pt").read_bytes() == before
    # Without an explicit output directory the run moves on to <name>-2.
    cfg = load_config("classification", tiny_overrides(tiny_folder, tmp_path, "output=null", f"output_dir={tmp_path}",
                                                       "name=exp", "train.epochs=1"))
    first, second = Trainer(build_task(cfg)), Trainer(build_task(load_config("classification", tiny_overrides(
        tiny_folder, tmp_path, "output=null", f"output_dir={tmp_path}", "name=exp", "train.epochs=1"))))
    first.fit(), second.fit()
    assert first.run_dir == tmp_path / "classification/exp" and second.run_dir == tmp_path / "classification/exp-2"
    assert load_config(second.run_dir / "config.yaml").name == "exp-2"


def test_bad_config_leaves_no_run_directory(tmp_path):
    with pytest.raises(UserError):
        Trainer(build_task(load_config("classification", ["data.format=folder", f"data.root={tmp_path}/missing",
                                                          f"output={tmp_path}/run"]))).fit()
    assert not (tmp_path / "run").exists()


def test_early_stopping(tiny_folder, tmp_path):
    # lr = 0: nothing changes, so the metric never improves after the first evaluation.
    trainer = make_trainer(tiny_folder, tmp_path / "run", "optim.lr=0", "train.epochs=6", "train.early_stop_patience=2",
                           "train.monitor=num_samples")
    trainer.fit()
    report = json.loads((tmp_path / "run/report.json").read_text())
    assert report["epochs"] == 3 and report["best_epoch"] == 1


def test_gradient_clipping_bounds_the_update(tiny_folder, tmp_path):
    snap = Snapshot()
    clip, lr = 1e-3, 0.05
    make_trainer(tiny_folder, tmp_path / "run", f"train.clip_grad={clip}", "train.max_iters=1", "optim.weight_decay=0",
                 callbacks=[snap]).fit()
    before, after = snap.states[0], snap.states[-1]
    trainable = [k for k in before if before[k].is_floating_point() and "running_" not in k and "num_batches" not in k]
    step = torch.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in trainable))
    # timm's "sgd" is Nesterov SGD: the first step is lr * (1 + momentum) * clipped gradient,
    # whose global norm is <= clip. Unclipped, this step is orders of magnitude larger.
    assert lr * clip * 0.5 < float(step) <= lr * clip * 1.9 * 1.001


def test_schedules_follow_their_formulas():
    import math

    from resvision.config import SchedConfig
    from resvision.engine.optim import build_scheduler

    def lrs(sched, total=20, per_epoch=4):
        opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": 0.5}], lr=1.0)
        scheduler = build_scheduler(opt, sched, per_epoch, total)
        out = []
        for step in range(total):
            out.append(opt.param_groups[0]["lr"])
            scheduler.step_update(step + 1)
        return out

    # Warmup over 1 epoch (4 updates) from 0.1, then cosine over all 20 updates; lr_scale 0.5 applied.
    got = lrs(SchedConfig(name="cosine", warmup_epochs=1, warmup_lr=0.1, min_lr=0.0))
    assert got[0] == pytest.approx(0.5 * 0.1)
    assert got[2] == pytest.approx(0.5 * (0.1 + 2 * (1.0 - 0.1) / 4))
    assert got[10] == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 10 / 20)))
    # Step: x0.1 every 2 epochs (8 updates), no warmup.
    got = lrs(SchedConfig(name="step", decay_epochs=2, decay_rate=0.1))
    assert got[7] == pytest.approx(0.5) and got[8] == pytest.approx(0.05) and got[16] == pytest.approx(0.005)
    # Poly with power 2: (1 - t/T)^2.
    got = lrs(SchedConfig(name="poly", decay_rate=2.0))
    assert got[5] == pytest.approx(0.5 * (1 - 5 / 20) ** 2, rel=1e-6)


def test_amp_resolution_on_cpu():
    from resvision.engine.trainer import resolve_amp

    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None  # bf16 matmul on CPU is slower: off unless asked
    assert resolve_amp("bf16", cpu) is torch.bfloat16 and resolve_amp("fp16", cpu) is torch.float16
    assert resolve_amp("off", cpu) is None


def test_channels_last_gives_the_same_predictions(tiny_folder, tmp_path):
    make_trainer(tiny_folder, tmp_path / "run", "train.epochs=1").fit()
    ckpt = tmp_path / "run/checkpoints/last.pt"
    plain = make_trainer(tiny_folder, tmp_path / "a")
    fast = make_trainer(tiny_folder, tmp_path / "b", "train.channels_last=true")
    assert plain.evaluate(ckpt) == fast.evaluate(ckpt)
    assert fast.model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
