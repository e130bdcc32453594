"""Capture throughput and memory vs the peer a user would write: HF eager with all outputs.

Peer: ``model(ids, attention_mask, output_attentions=True, output_hidden_states=True)`` per
batch, then the same positions gathered and copied to numpy (no store). Ours: the Recorder on
the bridge (hooks reduce to positions as they fire), also without the store, and then the full
`capture()` with the zarr store, so the store's own cost is visible. Same probes, batch size,
positions and layers; one process; median of ``--repeats``. Peak memory vs the number of probes
runs each size in a fresh subprocess (``VmHWM``).

Few-shot cost: the Recorder on ``--shots`` demonstrations per probe (the probe format's cached
demonstration prefix, computed once per relation) against the same Recorder zero-shot (today's
capture), and against running demonstrations + query as one sequence (what caching saves); and
the full ``capture()`` few-shot vs zero-shot, which includes scoring each probe's "known" flag.

    .venv/bin/python benchmarks/bench_capture.py [--model smollm2-135m] [--probes 128] [--batch-size 16] [--shots 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from probe.capture.recorder import Layout, Recorder, encode_probes, model_dims, pad_batch
from probe.config import ModelSpec
from probe.knowledge.loaders import load_probes
from probe.knowledge.protocol import ProbeFormat, build_prompts
from probe.models.load import load_model
from probe.runtime.variant import CaptureView

RESULTS = Path(__file__).parent / "results" / "capture.json"
POSITIONS = ("last", "subject")


def _inputs(loaded, n: int, shots: int = 0, cached: bool = True):
    """The first ``n`` eval probes asked with ``shots`` demonstrations (``cached=False``: demonstrations and
    query as one sequence, no shared prefix)."""
    pool = load_probes("builtin")
    facts = pool.split("eval").facts[:n]
    asked = build_prompts(facts, pool.facts, shots)
    if not cached:
        asked = [replace(a, prefix="", query=a.prefix + a.query) for a in asked]
    return encode_probes(facts, loaded.tokenizer, loaded.max_positions, 0, asked)


def peer(model, inputs, batch: int, pad_id: int) -> None:
    """HF eager forward with every output, then the stored positions gathered to numpy."""
    with torch.no_grad():
        for s in range(0, len(inputs), batch):
            items = inputs[s: s + batch]
            ids, mask = pad_batch(items, pad_id)
            out = model(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
            rows = torch.arange(len(items))
            for pos in POSITIONS:
                q = torch.tensor([max(getattr(p, pos), 0) for p in items])
                for h in out.hidden_states[1:]:
                    h[rows, q].float().numpy()
                for a in out.attentions:
                    a[rows, :, q].float().numpy()
            out.logits[rows, torch.tensor([p.last for p in items])].log_softmax(-1).topk(10)


def ours(recorder: Recorder, inputs, batch: int) -> None:
    for s in range(0, len(inputs), batch):
        recorder.record(inputs[s: s + batch], 0)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def memory_point(model_name: str, n: int, batch: int) -> float:
    """Peak memory (MB) of a fresh process capturing ``n`` probes with the store."""
    code = (
        "import tempfile, os\nfrom benchmarks.bench_capture import peak_mb\n"
        "os.environ['PROBE_ARTIFACTS'] = tempfile.mkdtemp()\n"
        f"os.symlink('{Path('artifacts').resolve()}/models', os.environ['PROBE_ARTIFACTS'] + '/models')\n"
        "from probe.capture.run import capture\nfrom probe.capture.spec import CaptureSpec\n"
        "from probe.runtime.spec import VariantSpec\nfrom probe.config import ModelSpec\n"
        "from probe.knowledge.protocol import ProbeFormat\n"
        "import json, pathlib\n"
        f"p = pathlib.Path(tempfile.mkdtemp()) / 'p.jsonl'\n"
        "from probe.knowledge.loaders import load_probes\n"
        f"facts = load_probes('builtin').split('eval').facts[:{n}]\n"
        "p.write_text(''.join(json.dumps({'id': f.id, 'prompt': f.prompt, 'answer': f.object, 'subject': f.subject,"
        " 'relation': f.relation, 'split': 'eval'}) + '\\n' for f in facts))\n"
        f"capture(CaptureSpec(VariantSpec(ModelSpec('{model_name}', dtype='float32')), probes=str(p),"
        f" batch_size={batch}, full_attention=0, format=ProbeFormat(shots=0)))\n"
        "print(peak_mb())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--probes", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-sizes", default="32,128,512", help="'' skips the memory points")
    ap.add_argument("--shots", type=int, default=ProbeFormat().shots)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    peer_model = load_model(ModelSpec(args.model, dtype="float32"))
    hooked = load_model(ModelSpec(args.model, dtype="float32"))
    from probe.models.bridge import hook_model

    bridge = hook_model(hooked)
    inputs = _inputs(peer_model, args.probes)
    n_layers, d, h = model_dims(peer_model.model)
    pad_id = peer_model.tokenizer.pad_token_id or 0

    def recorder_for(items) -> Recorder:
        layout = Layout(tuple(range(n_layers)), ("resid_post", "attn_out", "mlp_out", "pattern"), POSITIONS,
                        len(items), max(p.n_stored for p in items), d, h, 0, 0, 10, "float32")
        return Recorder(bridge, CaptureView(hooked.model), layout, pad_id)

    recorder = recorder_for(inputs)
    layout = recorder.layout
    t_peer = timed(lambda: peer(peer_model.model, inputs, args.batch_size, pad_id), args.repeats)
    t_ours = timed(lambda: ours(recorder, inputs, args.batch_size), args.repeats)
    few = _inputs(peer_model, args.probes, args.shots)
    few_recorder = recorder_for(few)  # its demonstration caches are built in the warm-up run, as once per capture
    t_few = timed(lambda: ours(few_recorder, few, args.batch_size), args.repeats)
    uncached = _inputs(peer_model, args.probes, args.shots, cached=False)
    t_uncached = timed(lambda: ours(recorder_for(uncached), uncached, args.batch_size), args.repeats)

    def with_store(shots: int = 0) -> float:
        from probe.capture.run import capture
        from probe.capture.spec import CaptureSpec
        from probe.runtime.spec import VariantSpec

        root = Path(tempfile.mkdtemp())  # the probe file; the capture goes to the store as run bench-<k>shot
        probes = root / "p.jsonl"
        pool = load_probes("builtin")
        facts = [*pool.split("eval").facts[: args.probes], *pool.split("train").facts]  # train: demonstrations
        probes.write_text("".join(json.dumps({"id": f.id, "prompt": f.prompt, "answer": f.object,
                                              "subject": f.subject, "relation": f.relation, "split": f.split}) + "\n"
                                  for f in facts))
        t = time.perf_counter()
        capture(CaptureSpec(VariantSpec(ModelSpec(args.model, dtype="float32")), probes=str(probes),
                            batch_size=args.batch_size, full_attention=0, format=ProbeFormat(shots=shots),
                            run=f"bench-{shots}shot", force=True))
        return time.perf_counter() - t

    t_store = with_store()
    t_store_few = with_store(args.shots)
    sizes = [int(x) for x in args.memory_sizes.split(",") if x.strip()]
    memory = {n: memory_point(args.model, n, args.batch_size) for n in sizes}
    result = {
        "model": args.model, "probes": len(inputs), "batch_size": args.batch_size, "positions": list(POSITIONS),
        "layers": n_layers, "hooks": list(layout.hooks), "threads": torch.get_num_threads(),
        "peer_hf_eager_s": round(t_peer, 3), "ours_recorder_s": round(t_ours, 3),
        "ratio_recorder_vs_peer": round(t_ours / t_peer, 3),
        "ours_capture_with_store_s_incl_load": round(t_store, 3),
        "shots": args.shots, "ours_recorder_few_shot_s": round(t_few, 3),
        "ratio_few_shot_vs_zero_shot_recorder": round(t_few / t_ours, 3),
        "ours_recorder_few_shot_uncached_s": round(t_uncached, 3),
        "ratio_few_shot_uncached_vs_zero_shot_recorder": round(t_uncached / t_ours, 3),
        "ours_capture_with_store_few_shot_s_incl_load": round(t_store_few, 3),
        "ratio_few_shot_vs_zero_shot_capture_incl_known_scoring": round(t_store_few / t_store, 3),
        "peak_rss_mb_by_probes": memory, "self_peak_rss_mb": peak_mb(),
        "note": "median of repeats; 2 shared CPU cores, timings noisy",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if np.isnan(result["ratio_recorder_vs_peer"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
