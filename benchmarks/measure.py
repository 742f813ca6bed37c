"""Timing helpers of tools/benchmark.py: alternating windows, medians and ratios, CPU taken by others."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Comparison", "alternate", "compare", "cpu_seconds", "matmul_window", "others_note", "try_compile"]


def alternate(variants: dict[str, Callable[[], float]], windows: int, warmup: int = 1,
              clock: Callable[[], float] = time.perf_counter, log: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Run every variant once per round, round after round, and return each one's window rates.

    Args:
        variants: name -> function that runs one window and returns the units it processed (images, FLOPs).
        windows: measured rounds; ``warmup`` rounds before them are run and discarded.
        clock: seconds (injectable for tests).

    Returns:
        name -> ``windows`` rates in units per second, in run order.
    """
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(warmup + windows):
        for name, run in variants.items():
            start = clock()
            units = run()
            rate = units / (clock() - start)
            if round_ >= warmup:
                rates[name].append(rate)
            if log:
                tag = "warm-up" if round_ < warmup else f"window {round_ - warmup + 1}/{windows}"
                log(f"  {name:>14} {tag}: {rate:,.2f}/s")
    return rates


@dataclass
class Comparison:
    """``a`` against ``b``: window medians and their ratio, and the per-round ratios' median and range."""

    a: float
    b: float
    ratio: float
    round_median: float
    low: float
    high: float
    windows: int


    @property
    def noisy(self) -> bool:
        """The rounds disagree by more than ±10 % around the ratio: a figure not to quote as a result."""
        return self.low < 0.9 * self.ratio or self.high > 1.1 * self.ratio

    def cell(self, target: float | None = None) -> str:
        """``**ratio** (round ratios min–max)``, then ``noisy`` or the target's verdict."""
        text = f"**{self.ratio:.3f}** ({self.low:.2f}–{self.high:.2f})"
        if self.noisy:
            return text + " noisy"
        return text + (f" (target ≥ {target}: {'met' if self.ratio >= target else '**not met**'})" if target else "")


def alone(code: str, env: dict[str, str] | None = None, timeout: int = 900) -> float:
    """Rate printed (as its last line) by ``code`` run in a fresh Python process (with ``env`` added to the
    environment): a variant measured as a user runs it, with no other engine, compiled model or thread pool in its
    process."""
    import subprocess
    import sys

    import torch

    threads = {"OMP_NUM_THREADS": str(torch.get_num_threads())}  # the thread count the caller measures with
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=True,
                         env={**os.environ, **threads, **(env or {})})
    return float(out.stdout.strip().splitlines()[-1])


def compare(rates: dict[str, list[float]], a: str, b: str) -> Comparison:
    """Median of ``a``'s windows / median of ``b``'s, plus the ratios of the two windows of each round."""
    pairs = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
    med_a, med_b = statistics.median(rates[a]), statistics.median(rates[b])
    return Comparison(med_a, med_b, med_a / med_b, statistics.median(pairs), min(pairs), max(pairs), len(pairs))


def cpu_seconds() -> tuple[float, float]:
    """Busy CPU-seconds so far of the whole machine (/proc/stat, steal excluded) and of this process's
    tree: itself and every live descendant (DataLoader workers, inductor compile workers), each with
    the children it has reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in Path("/proc/stat").read_text().split()[1:8])
    parent, used = {}, {}
    for entry in Path("/proc").iterdir():
        try:
            rest = (entry / "stat").read_text().rsplit(")", 1)[1].split() if entry.name.isdigit() else None
        except OSError:  # the process ended meanwhile
            continue
        if rest:  # fields after the name: state ppid ... utime(11) stime(12) cutime(13) cstime(14)
            parent[int(entry.name)], used[int(entry.name)] = int(rest[1]), sum(int(v) for v in rest[11:15])
    tree, queue = set(), [os.getpid()]
    while queue:
        pid = queue.pop()
        tree.add(pid)
        queue += [child for child, ppid in parent.items() if ppid == pid and child not in tree]
    return (user + nice + system + irq + softirq) / tick, sum(used.get(pid, 0) for pid in tree) / tick


def others_note(before: tuple[float, float], after: tuple[float, float], seconds: float) -> str:
    others = max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / seconds
    return (f"While this section ran ({seconds:.0f} s), other processes used {others:.2f} of the machine's "
            f"{os.cpu_count()} cores on average (/proc/stat minus this benchmark's processes).")


def matmul_window(n: int, count: int) -> Callable[[], float]:
    """A window of ``count`` fp32 ``torch.mm`` of two ``n x n`` matrices, returning its FLOP (``2 n^3`` each):
    the machine's matmul rate, the reference the model windows are alternated with."""
    import torch

    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)

    def window() -> float:
        for _ in range(count):
            torch.mm(a, b, out=out)
        return count * 2.0 * n**3
    return window


def try_compile(model, x):
    """``(compiled model, note)``, or ``(None, the error's last line)`` when compiling fails here."""
    import torch

    try:
        compiled = torch.compile(model)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(x)  # compile outside the windows; the warm-up round then runs it once more
    except Exception as exc:  # noqa: BLE001 - any backend failure is reported, not fatal
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return None, f"torch.compile failed on this machine: `{type(exc).__name__}: {lines[-1] if lines else ''}`"
    return compiled, (f"torch.compile (default mode, inductor) took {time.perf_counter() - start:.0f} s before the first "
                      "window (less when inductor's on-disk cache is warm from an earlier run).")
