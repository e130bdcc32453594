"""Recipes over llmcompressor's ``oneshot`` for GPTQ, SparseGPT, AWQ and RTN.

CPU specifics (DESIGN.md): the model must come from a folder with ``config.json`` (its
``name_or_path``), ``oneshot`` gets ``tokenizer=`` and a ``datasets.Dataset``; AWQ pins its
cached intermediates, which fails without an accelerator, so :func:`_no_pin_memory` makes
``IntermediatesCache.pin_memory`` a no-op while AWQ runs. A sparsifier combined with a quantizer
runs as two ``oneshot`` calls (sparsify, then quantize) so that the sparsity mask is known and
can be re-applied after baking: GPTQ's error feedback would otherwise refill pruned weights.

llmcompressor, compressed-tensors and datasets are imported inside the functions that use them
(marked "lazy: start-up time"): llmcompressor takes ~1.3 s to import on top of torch and logs a
warning on CPU, and every `probe` command that does not compress would pay for it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator

import torch

from probe.compress.spec import CompressSpec, parse_pattern


def quant_scheme(spec: CompressSpec):
    """The compressed-tensors weight-only scheme for ``spec``'s quantizer."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme  # lazy: start-up time

    args = QuantizationArgs(num_bits=spec.bits, type="int", symmetric=spec.symmetric, strategy="group",
                            group_size=spec.group_size)
    return QuantizationScheme(targets=list(spec.targets), weights=args)


def sparsify_recipe(spec: CompressSpec) -> list:
    from llmcompressor.modifiers.pruning import SparseGPTModifier  # lazy: start-up time

    if spec.pattern:
        n, m = parse_pattern(spec.pattern)
        # llmcompressor's "a:b" prunes a weights of every b (ours keeps n of m)
        kwargs = {"sparsity": 1 - n / m, "mask_structure": f"{m - n}:{m}"}
    else:
        kwargs = {"sparsity": spec.sparsity, "mask_structure": "0:0"}
    # SparseGPT names a matched module "<name>." so a plain "lm_head" ignore misses it (and the tied
    # embedding would be pruned through lm_head): ignore by regex instead
    ignore = [f"re:(.*\\.)?{re.escape(ig)}\\.?$" for ig in spec.ignore]
    return [SparseGPTModifier(targets=list(spec.targets), ignore=ignore, **kwargs)]


def quantize_recipe(spec: CompressSpec) -> list:
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier  # lazy: start-up time

    groups = {"group_0": quant_scheme(spec)}
    if spec.quantizer == "gptq":
        return [GPTQModifier(config_groups=groups, ignore=list(spec.ignore),
                             actorder="static" if spec.actorder == "static" else None)]
    quant = QuantizationModifier(config_groups=groups, ignore=list(spec.ignore))
    if spec.quantizer == "awq":
        from llmcompressor.modifiers.transform.awq import AWQModifier  # lazy: start-up time

        return [AWQModifier(), quant]
    return [quant]


@contextlib.contextmanager
def _no_pin_memory() -> Iterator[None]:
    from llmcompressor.pipelines.cache import IntermediatesCache  # lazy: start-up time

    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *a, **k: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


@contextlib.contextmanager
def hessian_errors(model: torch.nn.Module, original: dict[str, torch.Tensor]) -> Iterator[dict[str, float]]:
    """Each layer's relative reconstruction error, from the input Hessian GPTQ or SparseGPT builds for it.

    llmcompressor consumes a layer's Hessian (``∝ Σ x xᵀ``, float32) when it compresses the layer: GPTQ pops it
    from ``GPTQModifier._hessians`` in ``gptq.helpers.prepare_batch`` (then divides a copy by the sample count)
    and writes the quantized weights in ``update_batch_qparams``; SparseGPT's ``sparsify_weight`` pops it,
    damps and factorises it in place and returns the pruned weight. Both module-level names are wrapped
    while this context is open: the Hessian is held only until the layer's new weight exists, then
    :func:`probe.compress.report.relative_error` against ``original`` (weights by module name) is stored and
    the Hessian dropped, so at most one layer's Hessians are alive. The inputs are the ones each layer
    received in llmcompressor's sequential pipeline, i.e. with the earlier layers already compressed (its
    default ``propagate_error``). The scale (GPTQ: ``2 Σ x xᵀ``, SparseGPT: a running mean) cancels.
    """
    from llmcompressor.modifiers.gptq import base as gptq_base  # lazy: start-up time
    from llmcompressor.modifiers.pruning.sparsegpt import base as sgpt_base  # lazy: start-up time

    from probe.compress.report import relative_error

    names = {id(m): n for n, m in model.named_modules()}
    errors: dict[str, float] = {}
    pending: dict[str, torch.Tensor] = {}
    prepare_batch, update_batch_qparams = gptq_base.prepare_batch, gptq_base.update_batch_qparams
    sparsify_weight = sgpt_base.sparsify_weight

    def keeping_prepare_batch(batch, qparams, hessians, num_samples):
        for module in batch:
            pending[names[id(module)]] = hessians[module]
        return prepare_batch(batch, qparams, hessians, num_samples)

    def measuring_update_batch_qparams(modules, quantized, *args, **kwargs):
        for index, module in enumerate(modules):
            name = names[id(module)]
            errors[name] = relative_error(original[name], quantized[index], pending.pop(name))
        return update_batch_qparams(modules, quantized, *args, **kwargs)

    def measuring_sparsify_weight(*, module, hessians_dict, **kwargs):
        name = names[id(module)]
        hessian = hessians_dict[module].clone()
        loss, weight = sparsify_weight(module=module, hessians_dict=hessians_dict, **kwargs)
        errors[name] = relative_error(original[name], weight, hessian)
        return loss, weight

    gptq_base.prepare_batch, gptq_base.update_batch_qparams = keeping_prepare_batch, measuring_update_batch_qparams
    sgpt_base.sparsify_weight = measuring_sparsify_weight
    try:
        yield errors
    finally:
        gptq_base.prepare_batch, gptq_base.update_batch_qparams = prepare_batch, update_batch_qparams
        sgpt_base.sparsify_weight = sparsify_weight
        pending.clear()


def run_oneshot(model: torch.nn.Module, tokenizer, texts: list[str], recipe: list, spec: CompressSpec) -> float:
    """Apply ``recipe`` in place on ``model`` with ``texts`` as calibration; returns seconds spent."""
    from datasets import Dataset  # lazy: start-up time
    from llmcompressor import oneshot  # lazy: start-up time

    logging.getLogger("llmcompressor").setLevel(logging.WARNING)
    with contextlib.suppress(Exception):
        from loguru import logger  # llmcompressor's logger, present only with it

        logger.remove()
    pin = _no_pin_memory() if spec.quantizer == "awq" else contextlib.nullcontext()
    start = time.perf_counter()
    with pin:
        oneshot(model=model, tokenizer=tokenizer, dataset=Dataset.from_dict({"text": texts}), recipe=recipe,
                num_calibration_samples=len(texts), max_seq_length=spec.seq_len, shuffle_calibration_samples=False)
    return time.perf_counter() - start
