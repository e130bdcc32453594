"""Benchmark: ``probe.analysis.cka`` linear CKA against ``ckatorch`` on the same random data.

Cases (all in one process, float64 arithmetic on both sides):

1. n = 4,096, d = 576 (one SmolLM2-135M layer over 4k tokens): ours (feature space) vs
   ``ckatorch.cka_base`` (two n×n Gram matrices), plain and debiased.
2. n = 50,000, d = 4,096, ours streamed over row chunks with :class:`LinearCKAAccumulator`.
   ``ckatorch.cka_base`` would need two 50,000² float64 Gram matrices (20 GB each) plus centred
   copies, which this machine cannot hold, so it is compared on what it can do:
   a. its minibatch mode ``cka_batch`` on ``--mb-batches`` batches of 1,000 rows (default 10) vs our
      ``minibatch_cka`` on the same batches (the same estimator, so the values must agree);
   b. its full ``cka_base`` on the first ``--full-n`` rows vs ours on the same rows.

Run: ``.venv/bin/python benchmarks/bench_cka.py`` (a few minutes on 2 cores; ``--quick`` for a smoke
run). Results go to ``benchmarks/results/cka.json``.
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before NumPy/torch load their thread pools

import argparse
import json
import platform
import resource
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from ckatorch.core import cka_base, cka_batch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probe.analysis.cka import LinearCKAAccumulator, linear_cka, minibatch_cka

RESULTS = Path(__file__).resolve().parent / "results" / "cka.json"
GIB = 1024**3


class RssPeak:
    """Peak resident-set growth over a block, sampled every 5 ms (sees torch allocations too)."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.peak_bytes = 0

    def __enter__(self) -> RssPeak:
        self._base = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss - self._base)
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss - self._base)


def timed(fn: Callable[[], float], repeats: int) -> dict[str, Any]:
    """Run ``fn`` ``repeats`` times: value, median/all seconds and peak RSS growth."""
    times, value, peak = [], None, 0
    for _ in range(repeats):
        with RssPeak() as rss:
            t0 = time.perf_counter()
            value = float(fn())
            times.append(time.perf_counter() - t0)
        peak = max(peak, rss.peak_bytes)
    return {"value": value, "median_s": statistics.median(times), "times_s": times,
            "peak_rss_growth_gib": peak / GIB}


def compare(name: str, ours: dict[str, Any], theirs: dict[str, Any], note: str = "") -> dict[str, Any]:
    row = {"case": name, "ours": ours, "ckatorch": theirs,
           "abs_diff": abs(ours["value"] - theirs["value"]),
           "speedup_ours_vs_ckatorch": theirs["median_s"] / ours["median_s"], "note": note}
    print(f"\n[{name}]" + (f"  ({note})" if note else ""))
    print(f"  ours     value={ours['value']:.12f}  median={ours['median_s']:.3f}s  "
          f"peak RSS growth={ours['peak_rss_growth_gib']:.2f} GiB")
    print(f"  ckatorch value={theirs['value']:.12f}  median={theirs['median_s']:.3f}s  "
          f"peak RSS growth={theirs['peak_rss_growth_gib']:.2f} GiB")
    print(f"  |diff|={row['abs_diff']:.3e}  "
          f"speed ratio (ckatorch time / ours)={row['speedup_ours_vs_ckatorch']:.2f}x")
    return row


def make_pair(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 activations: y = scaled, permuted x plus noise, with a per-feature offset (built in place)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x += rng.standard_normal(d, dtype=np.float32) * 3  # non-zero feature means, as in real activations
    perm = rng.permutation(d)
    scale = rng.uniform(0.2, 2.0, d).astype(np.float32)
    y = np.empty_like(x)
    step = 4096
    for s in range(0, n, step):
        noise = rng.standard_normal((min(step, n - s), d), dtype=np.float32)
        y[s:s + step] = x[s:s + step, perm] * scale + noise
    return x, y


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)), "ram_gib": psutil.virtual_memory().total / GIB,
        "numpy": np.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "ckatorch": metadata.version("ckatorch"), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_1m_start": os.getloadavg()[0],  # other work on the machine inflates the timings
    }


def small_case(n: int, d: int, repeats: int) -> list[dict[str, Any]]:
    x, y = make_pair(n, d, seed=0)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    rows = []
    for debiased in (False, True):
        label = f"n={n}, d={d}" + (", debiased" if debiased else "")
        ours = timed(lambda d=debiased: linear_cka(x, y, debiased=d), repeats)
        theirs = timed(lambda d=debiased: cka_base(tx, ty, unbiased=d).item(), repeats)
        rows.append(compare(label, ours, theirs, "ours: feature space; ckatorch.cka_base: n×n Gram"))
    return rows


def large_case(n: int, d: int, batch: int, mb_batches: int, full_n: int, repeats: int, stream_repeats: int,
               ram_gib: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    t0 = time.perf_counter()
    x, y = make_pair(n, d, seed=1)
    inputs_gib = 2 * x.nbytes / GIB
    print(f"\ngenerated n={n}, d={d} float32 pair ({inputs_gib:.2f} GiB) in {time.perf_counter() - t0:.1f}s")
    chunk = 2048

    debiased_value: list[float] = []

    def ours_streamed() -> float:
        acc = LinearCKAAccumulator(debiased=True)  # keeps the few extra sums; gives both forms
        for s in range(0, n, chunk):  # as activations would arrive batch by batch
            acc.update(x[s:s + chunk], y[s:s + chunk])
        debiased_value.append(acc.compute(debiased=True))
        return acc.compute(debiased=False)

    tracemalloc.start()
    streamed = timed(ours_streamed, stream_repeats)
    streamed["tracemalloc_peak_gib"] = tracemalloc.get_traced_memory()[1] / GIB
    tracemalloc.stop()
    streamed["debiased_value"] = debiased_value[-1]
    gram_gib = 2 * n**2 * 8 / GIB
    print(f"\n[n={n}, d={d}, streamed in chunks of {chunk} rows]")
    print(f"  ours     value={streamed['value']:.12f} (debiased {streamed['debiased_value']:.12f})  "
          f"median={streamed['median_s']:.3f}s  times={[round(t, 2) for t in streamed['times_s']]}")
    print(f"  ours     peak memory: tracemalloc {streamed['tracemalloc_peak_gib']:.3f} GiB, RSS growth "
          f"{streamed['peak_rss_growth_gib']:.3f} GiB (inputs, {inputs_gib:.2f} GiB, not counted)")
    note = (f"cka_base not run: needs two {n}x{n} float64 Gram matrices ({gram_gib:.0f} GiB) plus centred "
            f"copies; this machine has {ram_gib:.0f} GiB")
    print(f"  ckatorch {note}")
    large = {"case": f"n={n}, d={d}, streamed", "ours": streamed, "chunk_rows": chunk, "ckatorch": None,
             "ckatorch_note": note}

    # a. minibatch mode on the same batches
    nb = min(mb_batches, n // batch)
    xb, yb = x[: nb * batch].reshape(nb, batch, d), y[: nb * batch].reshape(nb, batch, d)
    tbx, tby = torch.from_numpy(xb), torch.from_numpy(yb)
    ours_mb = timed(lambda: minibatch_cka(list(xb), list(yb)), repeats)
    theirs_mb = timed(lambda: cka_batch(tbx, tby).item(), repeats)
    rows = [compare(f"n={nb * batch}, d={d}, minibatch {nb}x{batch}", ours_mb, theirs_mb,
                    "same estimator (Nguyen et al. 2021): values must agree")]
    gap = abs(theirs_mb["value"] - streamed["value"])
    gap_deb = abs(theirs_mb["value"] - streamed["debiased_value"])
    large["ckatorch_minibatch_vs_our_full_abs_diff"] = gap
    large["ckatorch_minibatch_vs_our_full_debiased_abs_diff"] = gap_deb
    print(f"  ckatorch minibatch vs our full streamed CKA: |diff|={gap:.3e}, vs our debiased: {gap_deb:.3e} "
          "(different estimators of the same population CKA)")

    # b. ckatorch's full CKA on the first full_n rows
    sx, sy = x[:full_n], y[:full_n]
    tsx, tsy = torch.from_numpy(sx), torch.from_numpy(sy)
    ours_sub = timed(lambda: linear_cka(sx, sy), repeats)
    theirs_sub = timed(lambda: cka_base(tsx, tsy).item(), repeats)
    rows.append(compare(f"n={full_n}, d={d} (first rows of the large data)", ours_sub, theirs_sub,
                        "ckatorch.cka_base on the largest n it handles comfortably here"))
    return rows, large


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats for the small case")
    parser.add_argument("--large-repeats", type=int, default=3, help="repeats for the d=4096 comparisons")
    parser.add_argument("--large-stream-repeats", type=int, default=2, help="repeats for the n=50k stream")
    parser.add_argument("--mb-batches", type=int, default=10, help="1000-row batches for the minibatch case")
    parser.add_argument("--full-n", type=int, default=4096, help="rows for ckatorch's full CKA at d=4096")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    small_n, small_d, large_n, large_d, batch = 4096, 576, 50_000, 4096, 1000
    if args.quick:
        small_n, small_d, large_n, large_d, batch, args.full_n = 512, 64, 5000, 256, 250, 1024
        args.repeats = args.large_repeats = args.large_stream_repeats = 1

    info = machine()
    print("machine:", json.dumps(info))
    t0 = time.perf_counter()
    rows = small_case(small_n, small_d, args.repeats)
    more, large = large_case(large_n, large_d, batch, args.mb_batches, args.full_n, args.large_repeats,
                             args.large_stream_repeats, info["ram_gib"])
    out = {"machine": info, "comparisons": rows + more, "large_streamed": large,
           "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
           "total_s": time.perf_counter() - t0, "loadavg_1m_end": os.getloadavg()[0],
           "process_max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\ntotal {out['total_s']:.0f}s; process max RSS {out['process_max_rss_gib']:.2f} GiB; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
