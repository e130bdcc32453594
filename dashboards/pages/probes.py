"""Probes: a filterable, sortable table of facts; a row opens its logit-lens trajectory and attention."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
from dash import Dash, Input, Output, dcc, html, no_update

from dashboards import data
from dashboards.pages.common import (
    Query,
    attention_figure,
    control,
    empty_figure,
    experiment_control,
    graph,
    layers,
    pick,
    probe_options,
    qid,
    reference_variant,
    styled,
    table,
)
from probe.errors import ProbeError

PATH, TITLE, PAGE = "/probes", "Probes", "probes"


def fact_rows(root: Path, exp: data.Experiment) -> list[dict]:
    """One row per fact: relation, subject, answer, and per variant its status and top prediction."""
    status = data.fact_status(root, exp)
    tables = {v: data.probes(root, exp.model, r) for v, r in exp.runs.items()}
    rows = []
    for p in tables[reference_variant(exp)]:
        i = p["index"]
        row = {"id": i, "#": i, "fact": p["id"], "relation": p["relation"], "subject": p["subject"],
               "answer": p["object"], "split": p["split"]}
        for v in exp.variants:
            top = tables[v][i].get("top_tokens") or [""]
            row[v] = status[v][i]
            row[f"{v} says"] = str(top[0]).strip()
        rows.append(row)
    return rows


def layout(root: Path, query: Query) -> html.Div:
    picker, exp = experiment_control(root, PAGE, query)
    options = probe_options(root, exp)
    rows = fact_rows(root, exp)
    variants = [v for v in exp.variants if v != "original"] or ["original"]
    return html.Div([
        html.H2("Probes"), picker,
        control(PAGE, "variant", "attention of", [{"label": v, "value": v} for v in variants],
                pick(query.get("variant"), variants, "compressed" if "compressed" in variants else variants[0])),
        control(PAGE, "probe", "selected probe", options, pick(query.get("probe"), [o["value"] for o in options], 0),
                "30rem"),
        html.P("Filter with the boxes under the headers (e.g. forgotten, or >3 in #); click a row to open its fact.",
               style={"color": "#666", "fontSize": "0.85rem"}),
        table(rows, "probes-table", page_size=15, filter_action="native",
              style_data_conditional=[{"if": {"filter_query": f'{{{v}}} = "{s}"', "column_id": v},
                                       "backgroundColor": color}
                                      for v in exp.variants for s, color in (("forgotten", "#fbe3e1"),
                                                                             ("recovered", "#e1f5e3"),
                                                                             ("lost", "#fbe3e1"))]),
        html.Div(id="probes-detail-title", style={"marginTop": "1rem", "fontWeight": "bold"}),
        dcc.Link("open in the Attention page", id="probes-attention-link", href="/attention"),
        html.Div([graph("probes-lens", height=400), graph("probes-attention", height=400)],
                 style={"display": "grid", "gridTemplateColumns": "1fr 1.4fr"}),
    ])


def lens_figure(root: Path, exp: data.Experiment, probe: int) -> go.Figure:
    """The fact's answer rank through the logit lens, layer by layer, for every captured variant."""
    lays = layers(root, exp)
    fig = go.Figure()
    all_ranks = data.lens_ranks(root, exp.model, tuple(exp.runs[v] for v in exp.variants), lays, probe)
    for v, ranks in zip(exp.variants, all_ranks, strict=True):
        fig.add_scatter(x=lays, y=ranks + 1, name=v, mode="lines+markers")
    fig.update_layout(title="logit lens: rank of the answer (1 = top) per layer", xaxis_title="layer",
                      yaxis_title="answer rank", yaxis_type="log")
    return styled(fig)


def detail(root: Path, exp_key: str, variant: str, probe: int) -> tuple:
    """Title, link, lens trajectory and last-layer attention (mean of heads) of the selected fact."""
    try:
        exp = data.find_experiment(root, exp_key)
        fact = data.probes(root, exp.model, exp.runs[reference_variant(exp)])[int(probe)]
        title = f"probe {probe}: {fact['prompt']} → {fact['object']} ({fact['relation']}, {fact['split']})"
        link = f"/attention?exp={exp.key}&variant={variant}&probe={probe}"
    except (ProbeError, IndexError) as exc:
        return str(exc), "/attention", empty_figure(str(exc)), empty_figure(str(exc))
    figs = []
    for build in (lambda: lens_figure(root, exp, int(probe)),
                  lambda: attention_figure(root, exp, variant, layers(root, exp)[-1], -1, int(probe))):
        try:
            figs.append(build())
        except ProbeError as exc:
            figs.append(empty_figure(str(exc)))
    return title, link, *figs


def select_row(active_cell: dict | None) -> int:
    """A click on any cell of a row selects that row's probe (rows carry their probe index as id)."""
    if not active_cell or active_cell.get("row_id") is None:
        return no_update
    return int(active_cell["row_id"])


def register(app: Dash, root: Path) -> None:
    app.callback(Output(qid(PAGE, "probe"), "value"), Input("probes-table", "active_cell"),
                 prevent_initial_call=True)(select_row)
    app.callback(Output("probes-detail-title", "children"), Output("probes-attention-link", "href"),
                 Output("probes-lens", "figure"), Output("probes-attention", "figure"),
                 Input(qid(PAGE, "exp"), "value"), Input(qid(PAGE, "variant"), "value"),
                 Input(qid(PAGE, "probe"), "value"))(lambda exp, variant, probe: detail(root, exp, variant, probe))
