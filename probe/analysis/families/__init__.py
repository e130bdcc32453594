"""Metric families: each reads the checked captures and returns per-fact arrays keyed by variant.

Arrays are ``[n_eval, n_layers]`` (``[n_eval, n_layers, n_heads]`` for attention), one per
variant, over the eval-split facts at their last token; comparisons with the original exist for
every other variant, comparisons with the compressed model for the recoveries. A family never
writes: :mod:`probe.analysis.headline` turns the arrays into numbers with intervals and
:mod:`probe.analysis.writers` into tables.
"""
