"""Overview: what exists (captures, analyses, evals, recoveries, costs) and per variant what it knows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import plotly.graph_objects as go
from dash import Dash, html

from dashboards import data
from dashboards.pages.common import Query, graph, guarded, notice, table
from probe.analysis.spec import VARIANT_ORDER

PATH, TITLE = "/", "Overview"
STATUSES = ("known", "forgotten", "recovered", "lost", "broken", "unknown")


def _missing(exp: data.Experiment) -> list[str]:
    """Commands that would produce the variants and the analysis this experiment lacks."""
    out = []
    for v in VARIANT_ORDER:
        if v not in exp.runs:
            comp = "" if v == "original" else f" --compression {exp.compression}"
            out.append(f"{v}: probe capture --model {exp.model} --variant {v}{comp} --split all")
    if not exp.analysis:
        out.append(f"analysis: probe analyze --model {exp.model} --compression {exp.compression}")
    return out


@guarded
def _facts(root: Path, exp: data.Experiment) -> html.Div:
    """Facts known / forgotten / recovered per variant, as a table and a stacked bar chart."""
    status = data.fact_status(root, exp)
    splits = [p.get("split") for p in data.probes(root, exp.model, exp.runs[exp.variants[0]])]
    keep = [i for i, s in enumerate(splits) if s == "eval"] or list(range(len(splits)))
    counts = {v: Counter(s[i] for i in keep) for v, s in status.items()}
    rows = [{"variant": v, **{s: counts[v].get(s, 0) for s in STATUSES}} for v in exp.variants]
    fig = go.Figure([go.Bar(name=s, x=exp.variants, y=[counts[v].get(s, 0) for v in exp.variants])
                     for s in STATUSES if any(counts[v].get(s) for v in exp.variants)])
    fig.update_layout(barmode="stack", title=f"{exp.key}: eval-split facts per variant (top-1 in the captures)",
                      yaxis_title="facts")
    return html.Div([table(rows), graph(f"overview-facts-{exp.model}-{exp.compression}", fig, 320)])


def _bar(title: str, x: list, y: list, ytitle: str, graph_id: str) -> html.Div:
    fig = go.Figure(go.Bar(x=x, y=y))
    fig.update_layout(title=title, yaxis_title=ytitle)
    return graph(graph_id, fig, 300)


def layout(root: Path, query: Query) -> html.Div:
    exps = data.experiments(root)
    runs = data.capture_rows(root)
    parts: list = [html.H2("Overview"), html.P(f"artifacts: {Path(root).resolve()}", style={"color": "#666"})]
    if not exps and not runs:
        parts.append(notice(f"nothing to show under {Path(root).resolve()}: run `probe capture --variant original` "
                            f"and `probe capture --variant compressed --compression gptq3`, then `probe analyze`"))
    parts.append(html.H3("Captures"))
    parts.append(table([{k: r[k] for k in ("model", "run", "variant", "compression", "status", "batches",
                                           "n_probes")} for r in runs]) if runs else notice("no captures"))
    unfinished = [r for r in runs if r["status"] != "complete"]
    for r in unfinished:
        parts.append(notice(f"capture {r['model']}/{r['run']} is unfinished ({r['batches']} batches): rerun its "
                            f"`probe capture` command to resume it; pages ignore it until then"))
    for exp in exps:
        parts.append(html.H3(f"{exp.key}"))
        parts.append(html.P(f"variants captured: {', '.join(exp.variants) or 'none'}; analysis: "
                            f"{exp.analysis or 'none'}"))
        missing = _missing(exp)
        if missing:
            parts.append(notice("not found yet, and the command that produces it:\n" + "\n".join(missing)))
        if exp.runs:
            parts.append(_facts(root, exp))
    evals = data.eval_rows(root)
    parts.append(html.H3("Evaluation (probe eval)"))
    if evals:
        parts.append(table([{**{k: v for k, v in r.items() if k not in ("known_ids", "top1_accuracy")},
                             "top1": f"{r['top1_accuracy']:.1%}"} for r in evals]))
        parts.append(_bar("eval top-1 accuracy", [f"{r['model']}/{r['label']}" for r in evals],
                          [r["top1_accuracy"] for r in evals], "top-1", "overview-eval"))
    else:
        parts.append(notice("no eval results: run `probe eval --model M [--variant compressed --compression C]`"))
    recs = data.recovery_rows(root)
    parts.append(html.H3("Recoveries (probe recover)"))
    parts.append(table(recs) if recs else notice("no recoveries: run `probe recover --model M --compression C "
                                                 "--method prompt|prefix|idp|lora`"))
    costs = data.cost_rows(root)
    parts.append(html.H3("Costs (probe costs)"))
    if costs:
        labels = [f"{c['model']}/{c['compression']}/{c['variant']}" for c in costs]
        parts += [table(costs),
                  _bar("extra parameters", labels, [c["extra_parameters"] for c in costs], "parameters",
                       "overview-params"),
                  _bar("forward latency (median)", labels, [c["forward_ms"] for c in costs], "ms", "overview-latency")]
    else:
        parts.append(notice("no cost table: run `probe costs --model M --compression C`"))
    return html.Div(parts)


def register(app: Dash, root: Path) -> None:
    """The overview has no interactive callbacks."""
