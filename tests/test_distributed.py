"""DDP under torchrun on CPU (gloo): same weights as one process with the same global batch."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides

from resvision.engine import load_checkpoint
from resvision.engine.distributed import ShardSampler

ROOT = Path(__file__).resolve().parents[1]


def test_shard_sampler_covers_every_index_once():
    for length in (0, 1, 9, 10):
        for world in (1, 2, 3):
            shards = [list(ShardSampler(length, world, r)) for r in range(world)]
            assert sorted(i for s in shards for i in s) == list(range(length))
            assert [len(ShardSampler(length, world, r)) for r in range(world)] == [len(s) for s in shards]


def run_train(args, nproc=1):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    result = subprocess.run([*launcher, str(ROOT / "tools/train.py"), "--task", "classification", *args],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow  # torchrun launches (~15-20 s): CI runs them after the fast suite
def test_two_processes_equal_one_process_with_same_global_batch(tiny_folder, tmp_path):
    # Frozen BN: with trainable BN each rank would normalise with its own half-batch statistics,
    # which is a different computation, not a numerical difference.
    common = ["model.backbone.norm=frozen_bn", "model.label_smoothing=0", "train.epochs=2", "optim.lr=0.005"]
    run_train(tiny_overrides(tiny_folder, tmp_path / "one", *common, "train.batch_size=8"))
    out = run_train(tiny_overrides(tiny_folder, tmp_path / "two", *common, "train.batch_size=4"), nproc=2)
    assert out.stdout.count("run directory:") == 1  # rank 0 alone reports
    one, two = (load_checkpoint(tmp_path / d / "checkpoints/last.pt") for d in ("one", "two"))
    assert one["global_step"] == two["global_step"] == 6
    for name, tensor in one["model"].items():
        # Tolerance: gradients are averaged in a different order (all-reduce of two half-batch means).
        torch.testing.assert_close(tensor, two["model"][name], atol=1e-5, rtol=1e-4, msg=name)
    reports = [json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two")]
    assert reports[0]["num_samples"] == reports[1]["num_samples"] == 9  # every val image once, none padded
    assert reports[0]["top1"] == reports[1]["top1"]


@pytest.mark.slow  # torchrun launches (~15-20 s): CI runs them after the fast suite
def test_ddp_report_describes_the_saved_model_and_every_launch_exits_cleanly(tiny_folder, tmp_path):
    """Trainable BN: each rank's running statistics see only its own half batches. The report must
    equal a 1-process `eval` of the run's last.pt (rank 0's buffers are what it saves), and every
    launch must exit 0 with its report and plots written (runs aborted at exit before)."""
    from resvision.cli import main

    for i in range(2):
        run = tmp_path / f"run{i}"
        out = run_train(tiny_overrides(tiny_folder, run, "train.epochs=1", "train.batch_size=4", f"train.seed={i}"),
                        nproc=2)
        assert "terminate called" not in out.stderr
        report = json.loads((run / "report.json").read_text())
        assert (run / "plots/loss.png").is_file() and (run / "metrics.jsonl").read_text().strip()
        assert main(["eval", "--checkpoint", str(run / "checkpoints/last.pt"), "--output", str(tmp_path / f"e{i}")]) == 0
        again = json.loads((tmp_path / f"e{i}/report.json").read_text())
        assert again["num_samples"] == report["num_samples"] == 9
        assert again["top1"] == report["top1"] and again["f1_macro"] == pytest.approx(report["f1_macro"], abs=1e-12)
        # Probabilities, not only counts: rank 1's images (every other one) were scored with rank 0's statistics.
        ddp, single = (list(csv.DictReader(open(d / "val_predictions.csv"))) for d in (run, tmp_path / f"e{i}"))
        assert [r["image"] for r in ddp] == [r["image"] for r in single]
        for a, b in zip(ddp, single):
            assert float(a["prob"]) == pytest.approx(float(b["prob"]), rel=1e-5, abs=1e-6), a["image"]


def _launch_two_nodes(args):
    """``torchrun --nnodes 2 --nproc_per_node 1`` twice, as two machines would, meeting at a c10d rendezvous on
    127.0.0.1 (README "Several machines"); both exit 0; returns their stdout."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def node(rank):
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}",
                "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=resvision-test",
                str(ROOT / "tools/train.py"), "--task", "classification", *args]

    procs = [subprocess.Popen(node(rank), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return "".join(out for out, _ in outs)


@pytest.mark.slow  # four torchrun launches, ~25 s
def test_two_nodes_train_into_one_run_and_resume(tiny_folder, tmp_path):
    """Two nodes of one process each: global rank 0 alone claims the run directory and writes checkpoints and the
    report (one run, no "-2" twin), and ``--resume`` on both nodes continues from the saved checkpoint."""
    run = tmp_path / "run"
    out = _launch_two_nodes(tiny_overrides(tiny_folder, run, "train.epochs=1", "train.batch_size=4"))
    assert out.count("run directory:") == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    first = load_checkpoint(run / "checkpoints/last.pt")
    assert json.loads((run / "report.json").read_text())["num_samples"] == 9
    _launch_two_nodes(["--resume", *tiny_overrides(tiny_folder, run, "train.epochs=2", "train.batch_size=4")])
    resumed = load_checkpoint(run / "checkpoints/last.pt")
    assert resumed["epoch"] == first["epoch"] + 1 and resumed["global_step"] == 2 * first["global_step"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.slow
def test_repeated_torchrun_launches_all_exit_cleanly(tiny_folder, tmp_path):
    """4 of 22 two-process runs once aborted at exit (rank 1 left with the process group alive,
    torchrun then killed rank 0 mid-report). Eight launches in a row must all exit 0 with a report."""
    for i in range(8):
        run = tmp_path / f"run{i}"
        out = run_train(tiny_overrides(tiny_folder, run, "train.epochs=1", "train.batch_size=4"), nproc=2)
        assert "terminate called" not in out.stderr
        assert json.loads((run / "report.json").read_text())["num_samples"] == 9
        assert (run / "plots/confusion_matrix.png").is_file()
