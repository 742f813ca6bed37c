"""The measuring logic behind tools/benchmark.py: alternating windows, medians and the ratio."""

import pytest

from resvision.benchmarks.measure import alternate, compare


def test_alternating_windows_median_and_ratio():
    calls = []
    # A does 10 units per window, B 20. Window seconds in call order, the warm-up round (9 s each) first:
    # A: 1, 5, 2 -> rates 10, 2, 5    -> median 5
    # B: 2, 1, 8 -> rates 10, 20, 2.5 -> median 10
    durations = iter([9, 9, 1, 2, 5, 1, 2, 8])
    now = [0.0]

    def variant(name, units):
        def run():
            calls.append(name)
            now[0] += next(durations)
            return units
        return run

    rates = alternate({"A": variant("A", 10), "B": variant("B", 20)}, windows=3, warmup=1, clock=lambda: now[0])
    assert calls == ["A", "B"] * 4  # strictly alternating, warm-up round included
    assert rates == {"A": [10.0, 2.0, 5.0], "B": [10.0, 20.0, 2.5]}  # warm-up discarded

    c = compare(rates, "A", "B")
    assert (c.a, c.b, c.ratio, c.windows) == (5.0, 10.0, 0.5, 3)
    # round-by-round ratios: 10/10 = 1, 2/20 = 0.1, 5/2.5 = 2 -> median 1, range 0.1-2
    assert (c.round_median, c.low, c.high) == pytest.approx((1.0, 0.1, 2.0))


def test_a_ratio_whose_rounds_disagree_is_marked_noisy():
    """±10 % around the ratio of the medians: inside is a figure, outside is noise (docs/benchmarks.md)."""
    from resvision.benchmarks.measure import compare

    steady = compare({"a": [10.0, 10.5, 9.8], "b": [5.0, 5.0, 5.0]}, "a", "b")
    shaky = compare({"a": [10.0, 13.0, 8.0], "b": [5.0, 5.0, 5.0]}, "a", "b")
    assert not steady.noisy and "noisy" not in steady.cell(1.5) and "target ≥ 1.5: met" in steady.cell(1.5)
    assert shaky.noisy and shaky.cell(1.5).endswith("noisy")


def test_device_cuda_is_refused_for_sections_that_run_on_the_cpu_only():
    """``--device cuda`` moves the joint section's models to the GPU; every other section times CPU work, so asking
    for them on a GPU is an error naming the sections that can, before anything runs."""
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).parents[1] / "tools" / "benchmark.py"
    out = subprocess.run([sys.executable, str(tool), "--device", "cuda", "--only", "trainer"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert "--device cuda: only joint run on a GPU; add --only joint" in out.stderr
    assert "Trainer" not in out.stdout
