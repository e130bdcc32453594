"""Run one stage of an experiment file in this process and print its peak RSS and the most models alive at once.

``python -m tests.integration.stage_memory EXPERIMENT.toml STAGE_KEY`` prints one JSON line. Models are
counted for real: every ``transformers.PreTrainedModel`` built (``__init__``) or copied (``__setstate__``,
as a merged LoRA copy is) is kept in a weak set, and after each of those and each ``load_model`` the
live roots (models not inside another) are counted, in the main thread (a sampler thread calling
``gc.get_objects`` crashed a loading interpreter: it sees objects under construction). A model is
counted once it is fully built (not from inside the ``__init__`` of the model that will hold it), models
whose weights are all on the meta device (transformers builds those while loading) hold no memory and
are not counted, and models that share their weight storage (a plain view of a compressed model) count once.
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


def _storage(model: torch.nn.Module) -> set[int]:
    """Data pointers of the model's weights that hold memory (not on the meta device)."""
    return {p.untyped_storage().data_ptr() for p in model.parameters() if p.device.type != "meta"}


def models_alive() -> int:
    """Live HF models holding weights of their own: not a submodule of another live HF model, not all on the meta
    device, and not sharing most of their weight storage with a model already counted (unreachable ones
    collected first)."""
    gc.collect()
    models = list(LIVE)
    inner = {id(m) for o in models for m in o.modules() if m is not o}
    counted: list[set[int]] = []
    for storage in (_storage(o) for o in models if id(o) not in inner):
        if storage and not any(len(storage & c) > len(storage) // 2 for c in counted):
            counted.append(storage)
    return len(counted)


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

    depth = [0]  # models under construction: an inner model is counted once the outer one is built

    def built(self, *args, **kwargs):
        depth[0] += 1
        try:
            init(self, *args, **kwargs)
        finally:
            depth[0] -= 1
        LIVE.add(self)
        if depth[0] == 0:
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
