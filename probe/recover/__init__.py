"""Recovery stage: training soft prompt, prefix, LoRA and IDP on top of compressed variants.

Training only; loading and running a trained adapter is :mod:`probe.runtime`, which never imports this package.
"""
