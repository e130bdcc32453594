"""Benchmark: `probe compress --method gptq3` on SmolLM2 against a bare llmcompressor `oneshot`.

All in one process, on the same cached calibration texts (self-generated once, before timing):

1. peer: load SmolLM2 from its folder and call llmcompressor ``oneshot`` with the same GPTQ recipe
   (what a user would write by hand, without baking, report or save);
2. ours without evaluation: :func:`probe.compress.compress` ``evaluate=False`` (load, copy, oneshot, bake,
   per-layer errors from the Hessians GPTQ built during the oneshot, save; before it reused them, a forward pass of
   its own captured the layer inputs, 1.76x the peer);
3. with ``--with-eval``: ours with the full report (adds perplexity and eval-split knowledge on
   original and variant).

The calibration corpus is cached in ``artifacts/corpus`` (shared with the tests), so only the
first run on a machine generates it.

Prints wall times, the ratio of each of ours to the peer's ``oneshot`` time, and the peak RSS, and
writes ``benchmarks/results/compress.json``. Run: ``.venv/bin/python benchmarks/bench_compress.py``
(``--n-calibration 16`` for a quicker run).
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before torch loads its thread pool
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from probe.store import ArtifactStore


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-calibration", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--with-eval", action="store_true", help="also time the full report")
    args = parser.parse_args()

    from probe.models.load import smollm2_folder

    folder = smollm2_folder()
    shared_corpus = ArtifactStore.default().resolve("corpus", shared=True)
    shared_corpus.mkdir(exist_ok=True)
    scratch = ArtifactStore(Path(tempfile.mkdtemp(prefix="bench-compress-")) / "artifacts")
    model = scratch.model("smollm2-135m").path  # the shared model and corpus cache, linked into a scratch root
    model.parent.mkdir(parents=True)
    model.symlink_to(folder)
    scratch.resolve("corpus", shared=True).symlink_to(shared_corpus)
    os.environ["PROBE_ARTIFACTS"] = str(scratch.root)

    from probe.compress import build_spec, compress
    from probe.compress.llmc import quantize_recipe, run_oneshot
    from probe.compress.run import calibration_texts
    from probe.compress.spec import check_against_model
    from probe.config import ModelSpec
    from probe.models.load import load_model

    spec = build_spec("smollm2-135m", "gptq3", n_calibration=args.n_calibration, seq_len=args.seq_len)
    t = time.perf_counter()
    loaded = load_model(ModelSpec("smollm2-135m", dtype="float32"))
    texts, _ = calibration_texts(spec, loaded)  # generated and cached here, outside every timing
    corpus_s = time.perf_counter() - t

    t = time.perf_counter()
    peer = load_model(ModelSpec("smollm2-135m", dtype="float32"))
    resolved = check_against_model(spec, peer.model, 64)
    peer_oneshot_s = run_oneshot(peer.model, peer.tokenizer, texts, quantize_recipe(resolved), resolved)
    peer_total_s = time.perf_counter() - t
    del peer

    rows = {}
    for label, evaluate in (("ours_no_eval", False), ("ours_with_eval", True))[:2 if args.with_eval else 1]:
        t = time.perf_counter()
        path = compress(spec, force=True, evaluate=evaluate)
        wall = time.perf_counter() - t
        manifest = json.loads((path / "manifest.json").read_text())
        rows[label] = {"wall_s": wall, "timings": manifest["timings"],
                       "ratio_to_peer_oneshot": wall / peer_oneshot_s,
                       "ratio_to_own_oneshot": wall / manifest["timings"]["oneshot_s"]}

    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "load_avg": os.getloadavg()},
        "n_calibration": len(texts), "seq_len": args.seq_len, "corpus_s": corpus_s,
        "peer": {"oneshot_s": peer_oneshot_s, "load_plus_oneshot_s": peer_total_s},
        **rows, "peak_rss_mb": _rss_mb(),
    }
    print(json.dumps(result["machine"]))
    print(f"calibration: {len(texts)} texts × {args.seq_len} tokens (corpus {corpus_s:.1f} s, untimed)")
    print(f"peer llmcompressor oneshot: {peer_oneshot_s:.1f} s (load + oneshot {peer_total_s:.1f} s)")
    for label, row in rows.items():
        print(f"{label}: {row['wall_s']:.1f} s = {row['ratio_to_peer_oneshot']:.2f}x peer oneshot "
              f"({row['ratio_to_own_oneshot']:.2f}x its own oneshot); phases {row['timings']}")
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB")
    out = Path(__file__).parent / "results" / "compress.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")
    shutil.rmtree(scratch.root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
