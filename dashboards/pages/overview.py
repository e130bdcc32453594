"""Overview: the running study's stages (refreshed every few seconds), then its results in the order they land:
the original's knowledge per relation, the compression reports, the recovery training curves, then what exists
(captures, analyses, evals, recoveries, costs) and per variant what it knows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import plotly.graph_objects as go
from dash import Dash, Input, Output, html

from dashboards import data
from dashboards.pages.common import Query, clock, graph, guarded, notice, table, waiting
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


STATE_COLORS = {"pending": "#888", "running": "#2a5d9f", "done": "#1b7a3a", "failed": "#a12622"}


def status_view(root: Path) -> list:
    """Every experiment's stages: state, time spent, estimate, and the command that builds the same by hand."""
    docs = data.experiment_status(root)
    if not docs:
        return [notice("no experiment has run here yet: `probe demo` or `probe run EXPERIMENT.toml` shows its "
                       "stages here as they run")]
    out: list = []
    for doc in docs:
        done = sum(s.get("state") == "done" for s in doc["stages"])
        head = (f"experiment {doc.get('experiment')}: {doc['state']}, {done}/{len(doc['stages'])} stages done, "
                f"elapsed {clock(doc['elapsed'])}")
        if doc["state"] == "running":
            head += f", about {clock(doc['left'])} left"
        if doc["state"] in ("stopped", "interrupted", "failed"):
            head += " — rerun the same command: finished stages are reused, an interrupted capture resumes"
        cell = {"padding": "0.15rem 0.8rem 0.15rem 0", "textAlign": "left"}
        rows = [html.Tr([html.Th(h, style=cell) for h in ("#", "stage", "state", "time", "estimate", "command")])]
        for i, s in enumerate(doc["stages"], start=1):
            state = s.get("state", "pending")
            shown = state if state != "done" else f"done ({s.get('outcome')})"
            if state == "failed" and s.get("error"):
                shown += f": {s['error']}"
            rows.append(html.Tr([html.Td(i, style=cell), html.Td(s.get("label"), style=cell),
                                 html.Td(shown, style={**cell, "color": STATE_COLORS.get(state, "#000")}),
                                 html.Td(clock(s["elapsed"]) if s.get("elapsed") is not None else "", style=cell),
                                 html.Td(clock(s.get("estimate") or 0), style=cell),
                                 html.Td(html.Code(s.get("command", "")), style={**cell, "fontSize": "0.8rem"})],
                                className=f"stage stage-{state}", **{"data-stage": s.get("key"), "data-state": state}))
        out += [html.P(head, className=f"experiment-state experiment-{doc['state']}", style={"fontWeight": "bold"}),
                html.Table(rows, className="stages", style={"borderCollapse": "collapse", "fontSize": "0.9rem"})]
    return out


@guarded
def _relations(root: Path) -> html.Div:
    """Top-1 per relation of every saved eval (the original's comes first, minutes into a run)."""
    rows = [r for r in data.relation_rows(root) if r["split"] == "eval"] or data.relation_rows(root)
    if not rows:
        return waiting(root, "eval", "the original model's knowledge per relation", "probe eval --model M")
    labels = sorted({(r["model"], r["label"]) for r in rows}, key=lambda k: (k[0], k[1] != "original", k[1]))
    relations = sorted({r["relation"] for r in rows})
    fig = go.Figure([go.Bar(name=f"{m}/{la}", x=relations,
                            y=[next((r["top1"] for r in rows if (r["model"], r["label"], r["relation"]) ==
                                     (m, la, rel)), None) for rel in relations]) for m, la in labels])
    fig.update_layout(barmode="group", title="eval-split top-1 per relation (`probe eval`)", yaxis_title="top-1",
                      yaxis_range=[0, 1])
    return html.Div([graph("overview-relations", fig, 360)])


@guarded
def _compression(root: Path) -> html.Div:
    """Each compressed variant's report: knowledge and perplexity against the original, error per layer."""
    reports = data.compression_reports(root)
    if not reports:
        return waiting(root, "compress", "the compression report (knowledge lost, perplexity, error per layer)",
                       "probe compress --model M --method gptq3")
    rows = []
    fig = go.Figure()
    for r in reports:
        k = r.get("knowledge") or {}
        rows.append({"variant": f"{r['model']}/{r['label']}", "original top-1": _pct(k.get("original_top1")),
                     "top-1": _pct(k.get("top1_accuracy")), "facts forgotten": k.get("facts_forgotten"),
                     "ppl original → variant": _ppl(k), "bits/weight": round(r.get("effective_bits", 0), 2),
                     "sparsity": round(r.get("sparsity", 0), 3)})
        errors = r.get("reconstruction_error") or {}
        if errors:
            fig.add_trace(go.Scatter(x=list(range(len(errors))), y=list(errors.values()), mode="lines",
                                     name=r["label"], text=list(errors), hovertemplate="%{text}: %{y:.4f}"))
    parts: list = [table(rows)]
    if fig.data:
        fig.update_layout(title="relative reconstruction error per linear layer (calibration inputs)",
                          xaxis_title="linear layer (model order)", yaxis_title="‖ΔW X‖² / ‖W X‖²", yaxis_type="log")
        parts.append(graph("overview-compression", fig, 320))
    return html.Div(parts)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.1%}"


def _ppl(k: dict) -> str:
    a, b = k.get("original_perplexity"), k.get("perplexity")
    return "" if a is None or b is None else f"{a:.2f} → {b:.2f}"


@guarded
def _recovery(root: Path) -> html.Div:
    """Training curves of every finished recovery (held-out KL, when recorded, as markers)."""
    curves = data.recovery_curves(root)
    if not curves:
        return waiting(root, "recover", "the recovery training curves", "probe recover --model M --compression C "
                                                                          "--method prompt|prefix|idp|lora")
    fig = go.Figure()
    for c in curves:
        name = f"{c['compression']}/{c['method']}"
        fig.add_trace(go.Scatter(x=c["train"]["step"], y=c["train"]["kl"], mode="lines", name=f"{name} train"))
        if c["heldout"]:
            fig.add_trace(go.Scatter(x=c["heldout"]["step"], y=c["heldout"]["kl"], mode="lines+markers",
                                     name=f"{name} held-out", line={"dash": "dot"}))
    objective = next((c["objective"] for c in curves if c["objective"]), "loss")
    fig.update_layout(title=f"recovery training: {objective} per step (train batches; held-out dotted)",
                      xaxis_title="step", yaxis_title="KL" if "kl" in str(objective).lower() else "loss")
    return html.Div([graph("overview-recovery", fig, 340)])


def layout(root: Path, query: Query) -> html.Div:
    exps = data.experiments(root)
    runs = data.capture_rows(root)
    parts: list = [html.H2("Overview"), html.P(f"artifacts: {Path(root).resolve()}", style={"color": "#666"}),
                   html.H3("Study"), html.Div(status_view(root), id="overview-status"),
                   html.H3("Knowledge per relation"), _relations(root),
                   html.H3("Compression"), _compression(root),
                   html.H3("Recovery training"), _recovery(root)]
    if not exps and not runs and not data.experiment_status(root):
        parts.append(notice(f"nothing to show under {Path(root).resolve()}: run `probe demo`, or `probe capture "
                            f"--variant original` and `probe capture --variant compressed --compression gptq3`, then "
                            f"`probe analyze`"))
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
    """The stage table follows the app's clock (``tick``), without rebuilding the page."""
    app.callback(Output("overview-status", "children"), Input("tick", "n_intervals"),
                 prevent_initial_call=True)(lambda _n: status_view(root))
