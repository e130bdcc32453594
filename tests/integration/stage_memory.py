"""Run one stage of an experiment file in this process and print its peak RSS and the most models alive at once.

``python -m tests.integration.stage_memory EXPERIMENT.toml STAGE_KEY`` prints one JSON line. Models are
counted for real: every ``load_model`` the stage modules imported is wrapped to count, after each
load, the live ``transformers.PreTrainedModel`` roots (models not inside another), and a sampler
thread counts them every half second (a merged LoRA copy is made without ``load_model``).
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import threading
import time

import transformers

from probe.experiment.run import _export_model_path, plan
from probe.experiment.spec import load_experiment
from probe.models import load as load_module


def models_alive() -> int:
    """Live HF models that are not a submodule of another live HF model."""
    gc.collect()
    models = [o for o in gc.get_objects() if isinstance(o, transformers.PreTrainedModel)]
    inner = {id(m) for o in models for m in o.modules() if m is not o}
    return sum(1 for o in models if id(o) not in inner)


class Counter:
    def __init__(self) -> None:
        self.most = 0
        self.loads = 0
        self.stop = threading.Event()

    def see(self) -> None:
        self.most = max(self.most, models_alive())

    def sample(self) -> None:
        while not self.stop.wait(0.5):
            self.see()


def install(counter: Counter) -> None:
    original = load_module.load_model

    def counted(*args, **kwargs):
        loaded = original(*args, **kwargs)
        counter.loads += 1
        counter.see()
        return loaded

    for name, module in list(sys.modules.items()):  # our modules only: others import lazily on attribute access
        if name.startswith("probe.") and vars(module).get("load_model") is original:
            module.load_model = counted


def main(path: str, key: str) -> None:
    spec = load_experiment(path)
    _export_model_path(spec)
    stages = {s.key: s for s in plan(spec)}
    counter = Counter()
    install(counter)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampler = threading.Thread(target=counter.sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    outcome = stages[key].run()
    counter.stop.set()
    sampler.join()
    counter.see()
    print(json.dumps({"stage": key, "outcome": outcome, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      * 1024, "rss_before": before, "models_alive_max": counter.most, "loads": counter.loads,
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
