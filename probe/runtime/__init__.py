"""Runtime: load a variant and run it (KV prefix, recovery adapters at inference, logits function, hook view).

Below the stages (evaluation, capture, costs, analysis, recover), above models and knowledge.
``probe.runtime.spec`` is light (no torch): it names a variant and where it is stored.
"""
