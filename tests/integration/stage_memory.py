"""Run one stage of an experiment file in this process and print its peak RSS and the most models alive at once.

``python -m tests.integration.stage_memory EXPERIMENT.toml STAGE_KEY`` prints one JSON line. Models are
counted for real: every ``transformers.PreTrainedModel`` built (``__init__``) or copied (``__setstate__``,
as a merged LoRA copy is) is kept in a weak set, and after each of those and each ``load_model`` the
live roots (models not inside another) are counted, in the main thread (a sampler thread calling
``gc.get_objects`` crashed a loading interpreter: it sees objects under construction).
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
import weakref

import torch
import transformers

from probe.experiment.run import _export_model_path, plan
from probe.experiment.spec import load_experiment
from probe.models import load as load_module

LIVE: weakref.WeakSet = weakref.WeakSet()


def models_alive() -> int:
    """Live HF models that are not a submodule of another live HF model (unreachable ones collected first)."""
    gc.collect()
    models = list(LIVE)
    inner = {id(m) for o in models for m in o.modules() if m is not o}
    return sum(1 for o in models if id(o) not in inner)


class Counter:
    def __init__(self) -> None:
        self.most = 0
        self.loads = 0

    def see(self) -> None:
        self.most = max(self.most, models_alive())


def install(counter: Counter) -> None:
    original = load_module.load_model
    init, setstate = transformers.PreTrainedModel.__init__, torch.nn.Module.__setstate__

    def counted(*args, **kwargs):
        loaded = original(*args, **kwargs)
        counter.loads += 1
        counter.see()
        return loaded

    def built(self, *args, **kwargs):
        init(self, *args, **kwargs)
        LIVE.add(self)
        counter.see()

    def copied(self, state):
        setstate(self, state)
        if isinstance(self, transformers.PreTrainedModel):
            LIVE.add(self)
            counter.see()

    transformers.PreTrainedModel.__init__ = built
    torch.nn.Module.__setstate__ = copied
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
    t0 = time.perf_counter()
    outcome = stages[key].run()
    counter.see()
    print(json.dumps({"stage": key, "outcome": outcome, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      * 1024, "rss_before": before, "models_alive_max": counter.most, "loads": counter.loads,
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
