"""Attention: one probe's attention, original vs a variant, per layer and head; prompt mass; IDP prompt choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from dash import Dash, Input, Output, html

from dashboards import data
from dashboards.pages.common import (
    Query,
    attention_figure,
    control,
    empty_figure,
    experiment_control,
    graph,
    layers,
    n_heads,
    notice,
    pick,
    probe_options,
    qid,
    variant_options,
)
from probe.errors import ProbeError

PATH, TITLE, PAGE = "/attention", "Attention", "attention"


def layout(root: Path, query: Query) -> html.Div:
    picker, exp = experiment_control(root, PAGE, query)
    if not exp.runs:
        return html.Div([html.H2("Attention"), picker,
                         notice(f"no complete capture of {exp.key}: run `probe capture --model {exp.model} "
                                f"--variant original --split all`")])
    lays = layers(root, exp)
    variants = [o["value"] for o in variant_options(exp)] or ["original"]
    layer = pick(query.get("layer"), lays, lays[-1])
    heads = n_heads(root, exp, layer)
    probes = probe_options(root, exp)
    return html.Div([
        html.H2("Attention"), picker,
        control(PAGE, "variant", "variant (right)", [{"label": v, "value": v} for v in variants],
                pick(query.get("variant"), variants, "compressed" if "compressed" in variants else variants[0])),
        control(PAGE, "layer", "layer", [{"label": str(la), "value": la} for la in lays], layer, "7rem"),
        control(PAGE, "head", "head", [{"label": "mean of heads", "value": -1}]
                + [{"label": str(h), "value": h} for h in range(heads)],
                pick(query.get("head"), list(range(-1, heads)), -1), "10rem"),
        control(PAGE, "probe", "probe", probes, pick(query.get("probe"), [p["value"] for p in probes], 0), "30rem"),
        graph("attention-heatmaps", height=440),
        html.Div([html.Div([html.H4("Attention on the prompt positions, per layer"), html.Div(id="attention-mass")]),
                  html.Div([html.H4("IDP: the prompt each probe chose"), html.Div(id="attention-idp")])],
                 style={"display": "grid", "gridTemplateColumns": "1fr 1fr", "gap": "1rem"}),
    ])


def heatmaps(root: Path, exp_key: str, variant: str, layer: int, head: int, probe: int) -> go.Figure:
    try:
        exp = data.find_experiment(root, exp_key)
        fig = attention_figure(root, exp, variant, int(layer), int(head), int(probe))
        fact = data.probes(root, exp.model, exp.runs[next(iter(exp.runs))])[int(probe)]
        return mark_demonstrations(fig, int(fact.get("query_start", 0)), int(fact["n_tokens"]))
    except ProbeError as exc:
        return empty_figure(str(exc))


def mark_demonstrations(fig: go.Figure, query_start: int, n_tokens: int) -> go.Figure:
    """Shade the demonstration key columns (few-shot probe format) and show only the query's rows: demonstration
    rows are not captured (they run as a cached prefix)."""
    if query_start <= 0:
        return fig
    for i, axis in enumerate(a for a in fig.layout if a.startswith("xaxis")):
        offset = 1 if str((fig.layout[axis].ticktext or ("",))[0]).startswith("⟨p") else 0  # a prompt column first
        ref = "" if axis == "xaxis" else axis[5:]
        fig.add_shape(type="rect", x0=offset - 0.5, x1=offset + query_start - 0.5, y0=0, y1=1, xref=f"x{ref}",
                      yref=f"y{ref} domain", fillcolor="white", opacity=0.35, line_width=0)
        if i == 0:
            fig.add_annotation(x=offset - 0.5, y=1, xref=f"x{ref}", yref=f"y{ref} domain", text="demonstrations",
                               showarrow=False, xanchor="left", yanchor="bottom")
        y = "yaxis" + ref
        if fig.layout[y].title.text == "query token":
            fig.layout[y].update(autorange=False, range=[n_tokens - 0.5, query_start - 0.5])
    return fig


def mass(root: Path, exp_key: str, variant: str, head: int, probe: int) -> html.Div:
    """The last token's attention mass on the variant's prompt positions per layer (head or mean of heads)."""
    try:
        exp = data.find_experiment(root, exp_key)
        lays = layers(root, exp)
        m = data.prompt_mass(root, exp.model, exp.runs[variant], lays, int(probe))
    except ProbeError as exc:
        return notice(str(exc), "error")
    if m is None:
        with_prompt = [v for v in exp.variants if v in ("prompt", "prefix", "idp")]
        hint = (f"captured prompt variants: {', '.join(with_prompt)}" if with_prompt else
                f"run `probe capture --model {exp.model} --variant idp --compression {exp.compression}` (or prompt, "
                f"prefix)")
        return notice(f"{variant} has no prompt positions, so no prompt mass; {hint}")
    y = m.mean(1) if int(head) < 0 else m[:, int(head)]
    fig = go.Figure(go.Scatter(x=lays, y=y, mode="lines+markers", name=variant))
    fig.update_layout(title=f"{variant}, probe {probe}, {'mean of heads' if int(head) < 0 else f'head {head}'}",
                      xaxis_title="layer", yaxis_title="attention mass on prompt", yaxis_range=[0, 1])
    return graph("attention-mass-graph", fig, 320)


def idp(root: Path, exp_key: str, probe: int) -> html.Div:
    """Which prompt of the IDP pool this probe chose, and how often each prompt was chosen."""
    try:
        exp = data.find_experiment(root, exp_key)
        if "idp" not in exp.runs:
            return notice(f"no IDP capture of {exp.key}: run `probe recover --model {exp.model} --compression "
                          f"{exp.compression} --method idp`, then `probe capture --model {exp.model} --variant idp "
                          f"--compression {exp.compression} --split all`")
        chosen = data.chosen_prompts(root, exp.model, exp.runs["idp"])
    except ProbeError as exc:
        return notice(str(exc), "error")
    n_prompts = int(data.open_capture(root, exp.model, exp.runs["idp"]).manifest.get("prompt", {}).get("n_prompts")
                    or chosen.max() + 1)
    counts = np.bincount(chosen[chosen >= 0], minlength=n_prompts)
    fig = go.Figure(go.Bar(x=list(range(len(counts))), y=counts))
    fig.update_layout(title="usage of each prompt over all probes", xaxis_title="prompt", yaxis_title="probes")
    return html.Div([html.P(f"probe {probe} chose prompt {int(chosen[int(probe)])}", id="attention-idp-chosen"),
                     graph("attention-idp-graph", fig, 280)])


def register(app: Dash, root: Path) -> None:
    q = {k: Input(qid(PAGE, k), "value") for k in ("exp", "variant", "layer", "head", "probe")}
    app.callback(Output("attention-heatmaps", "figure"), *q.values())(
        lambda exp, variant, layer, head, probe: heatmaps(root, exp, variant, layer, head, probe))
    app.callback(Output("attention-mass", "children"), q["exp"], q["variant"], q["head"], q["probe"])(
        lambda exp, variant, head, probe: mass(root, exp, variant, head, probe))
    app.callback(Output("attention-idp", "children"), q["exp"], q["probe"])(
        lambda exp, probe: idp(root, exp, probe))
