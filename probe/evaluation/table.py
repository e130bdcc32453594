"""Rich rendering of an eval result: one row per relation, a total row."""

from __future__ import annotations

from rich.table import Table


def eval_table(result: dict) -> Table:
    title = (f"{result['model']} · {result['variant']}"
             + (f" ({result['compression']})" if result["compression"] else "")
             + f" · {result['probes']} · {result['n_facts']} facts")
    table = Table(title=title)
    for col in ("relation", "facts", "top-1", "multiple choice", "exact match"):
        table.add_column(col, justify="left" if col == "relation" else "right")
    for rel, d in result["per_relation_detail"].items():
        table.add_row(rel, str(d["n"]), f"{d['top1']:.1%}", f"{d['mc']:.1%}", f"{d['exact_match']:.1%}")
    lo, hi = result["top1_ci95"]
    table.add_section()
    table.add_row("[bold]all", str(result["n_facts"]), f"[bold]{result['top1_accuracy']:.1%}[/] [{lo:.1%}, {hi:.1%}]",
                  f"{result['mc_accuracy']:.1%}", f"{result['exact_match']:.1%}")
    if result.get("perplexity") is not None:
        table.caption = f"held-out perplexity {result['perplexity']:.2f}"
    return table
