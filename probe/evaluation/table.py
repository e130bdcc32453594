"""Rich rendering of an eval result: the protocol, one row per relation, a total row."""

from __future__ import annotations

from rich.table import Table


def eval_table(result: dict) -> Table:
    p = result.get("protocol") or {"shots": 0, "known": "first_token", "template": result.get("template", 0)}
    title = (f"{result['model']} · {result['variant']}"
             + (f" ({result['compression']})" if result["compression"] else "")
             + f" · {result['probes']} · {result['n_facts']} facts"
             + f"\n{p['shots']}-shot, template {p['template']}, known = {p['known']}")
    table = Table(title=title)
    for col in ("relation", "facts", "known", "top-1", "full answer", "multiple choice"):
        table.add_column(col, justify="left" if col == "relation" else "right")
    for rel, d in result["per_relation_detail"].items():
        table.add_row(rel, str(d["n"]), f"{d.get('known', d['top1']):.1%}", f"{d['top1']:.1%}",
                      f"{d['exact_match']:.1%}", f"{d['mc']:.1%}")
    lo, hi = result.get("known_ci95", result["top1_ci95"])
    table.add_section()
    table.add_row("[bold]all", str(result["n_facts"]),
                  f"[bold]{result.get('known_rate', result['top1_accuracy']):.1%}[/] [{lo:.1%}, {hi:.1%}]",
                  f"{result['top1_accuracy']:.1%}", f"{result['exact_match']:.1%}", f"{result['mc_accuracy']:.1%}")
    caption = []
    if result.get("wrong_copies_demo") and p["shots"]:
        caption.append(f"{result['wrong_copies_demo']:.1%} of wrong top-1 predictions copy a demonstration's answer")
    if result.get("perplexity") is not None:
        caption.append(f"held-out perplexity {result['perplexity']:.2f}")
    table.caption = "; ".join(caption) or None
    return table
