"""What compression did: per-layer reconstruction error and sparsity, perplexity, knowledge.

Reconstruction error of a linear layer is ``||W_c X - W X||² / ||W X||²`` over calibration inputs ``X`` to
that layer. Where GPTQ or SparseGPT builds the input Hessian ``G ∝ X Xᵀ`` anyway, the error is
``tr(ΔW G ΔWᵀ) / tr(W G Wᵀ)`` (:func:`relative_error`), taken as each layer is compressed
(:func:`probe.compress.llmc.hessian_errors`); otherwise :func:`streamed_errors` runs the *original* model
over the calibration texts once and sums both norms layer by layer. Neither keeps more than one layer's
matrices, so memory does not grow with depth (all Gram matrices of LLaMA-7B would take 56 GB in float64).
AWQ rescales norms and preceding layers, so a layer's inputs change too: its per-layer error is not
reported (``None``).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from rich.table import Table

from probe.config import ModelSpec
from probe.evaluation.perplexity import heldout_text, perplexity
from probe.evaluation.run import EvalSpec, run_eval
from probe.knowledge.scoring import hf_logits_fn
from probe.knowledge.status import id_transitions
from probe.progress import track
from probe.runtime.spec import VariantSpec
from probe.runtime.variant import LoadedVariant


def relative_error(original: torch.Tensor, compressed: torch.Tensor, gram: torch.Tensor) -> float:
    """``tr(ΔW G ΔWᵀ) / tr(W G Wᵀ)`` in float64, ``G`` the Gram (or Hessian) of the layer's inputs."""
    w, g = original.double(), gram.double()
    delta = compressed.double() - w
    return float(((delta @ g) * delta).sum() / ((w @ g) * w).sum())


@torch.no_grad()
def streamed_errors(model: torch.nn.Module, layers: dict[str, torch.nn.Linear], compressed: torch.nn.Module,
                    batches: list[torch.Tensor]) -> dict[str, float]:
    """``||ΔW X||² / ||W X||²`` per layer, ``X`` the inputs each layer of ``model`` (the original) receives.

    One forward pass of ``model`` per batch; a pre-hook on each layer adds ``||X ΔWᵀ||²`` and ``||X Wᵀ||²``
    (float32 products, float64 sums), with ``ΔW`` taken from ``compressed``'s layer of the same name.
    """
    mods = dict(compressed.named_modules())
    sums = {n: [0.0, 0.0] for n in layers}
    by_module = {id(m): n for n, m in layers.items()}

    def hook(mod, args):
        name = by_module[id(mod)]
        x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
        w = mod.weight.detach().float()
        sums[name][0] += float((x @ (mods[name].weight.detach().float() - w).T).double().pow(2).sum())
        sums[name][1] += float((x @ w.T).double().pow(2).sum())

    handles = [m.register_forward_pre_hook(hook) for m in layers.values()]
    try:
        for ids in track(batches, "Reconstruction error per layer"):
            model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return {n: num / den for n, (num, den) in sums.items()}


def layer_sparsity(model: torch.nn.Module, names: list[str]) -> dict[str, float]:
    mods = dict(model.named_modules())
    return {n: float((mods[n].weight == 0).float().mean()) for n in names}


def overall_sparsity(model: torch.nn.Module, names: list[str]) -> float:
    mods = dict(model.named_modules())
    zeros = sum(int((mods[n].weight == 0).sum()) for n in names)
    return zeros / sum(mods[n].weight.numel() for n in names)


_ORIGINAL_RESULTS: dict[str, dict] = {}  # model hash → original's eval + perplexity (same process)


def _knowledge(loaded_original, model: torch.nn.Module, vspec: VariantSpec, reuse: bool) -> dict:
    """Eval-split top-1 (saved as `probe eval`'s result) and held-out perplexity of ``model``."""
    base = replace(loaded_original, model=model)
    lv = LoadedVariant(vspec, base, hf_logits_fn(model), {"model": loaded_original.model_hash})
    res = run_eval(EvalSpec(variant=vspec), loaded=lv, reuse=reuse)
    ppl = perplexity(base.tokenizer, lv.logits_fn, heldout_text(), device=base.device)
    return {"top1_accuracy": res["top1_accuracy"], "perplexity": ppl, "known": set(res["known_ids"]),
            "n_facts": res["n_facts"], "known_rate": res.get("known_rate"), "protocol": res.get("protocol")}


def original_knowledge(loaded_original) -> dict:
    """The original's eval (saved as `probe eval --model M` saves it, reused when saved) and perplexity; kept for
    the process, so each variant's report and an experiment's first stage share one evaluation."""
    if loaded_original.model_hash not in _ORIGINAL_RESULTS:
        vspec = VariantSpec(ModelSpec(loaded_original.name), "original")
        _ORIGINAL_RESULTS[loaded_original.model_hash] = _knowledge(loaded_original, loaded_original.model, vspec,
                                                                   reuse=True)
    return _ORIGINAL_RESULTS[loaded_original.model_hash]


def knowledge_and_perplexity(loaded_original, compressed: torch.nn.Module, label: str) -> dict:
    """Perplexity and eval-split top-1 of both models, and facts the original knows that the variant forgets."""
    orig = original_knowledge(loaded_original)
    var = _knowledge(loaded_original, compressed, VariantSpec(ModelSpec(loaded_original.name), "compressed", label),
                     reuse=False)
    return {
        "n_eval_facts": var["n_facts"],
        "original_top1": orig["top1_accuracy"], "top1_accuracy": var["top1_accuracy"],
        "original_perplexity": orig["perplexity"], "perplexity": var["perplexity"],
        "protocol": var["protocol"], "original_known": orig["known_rate"], "known_rate": var["known_rate"],
        "facts_forgotten": len(id_transitions(orig["known"], var["known"])["lost"]),
        "facts_gained": len(var["known"] - orig["known"]),
    }


def report_table(report: dict) -> Table:
    """Summary lines, then one row per layer."""
    k = report.get("knowledge") or {}
    title = (f"{report['label']}: ppl {k.get('original_perplexity', float('nan')):.2f} → "
             f"{k.get('perplexity', float('nan')):.2f}, eval top-1 {k.get('original_top1', 0):.3f} → "
             f"{k.get('top1_accuracy', 0):.3f}, forgotten {k.get('facts_forgotten', '-')}, "
             f"sparsity {report['sparsity']:.3f}, {report['effective_bits']:.2f} bits/weight")
    table = Table(title=title)
    for col in ("layer", "rel. recon. error", "sparsity"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for name, sp in report["layer_sparsity"].items():
        err = report["reconstruction_error"].get(name)
        table.add_row(name, "-" if err is None else f"{err:.4f}", f"{sp:.3f}")
    return table
