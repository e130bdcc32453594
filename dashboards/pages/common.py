"""Pieces every page shares: URL-state controls, notices, tables and the attention figure."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import plotly.graph_objects as go
from dash import dash_table, dcc, html
from plotly.subplots import make_subplots

from dashboards import data
from probe.errors import ProbeError

Query = dict[str, str]


def parse_query(search: str | None) -> Query:
    return dict(parse_qsl((search or "").lstrip("?")))


def qid(page: str, key: str) -> dict:
    """The id of a control whose value lives in the URL query under ``key``."""
    return {"type": "q", "page": page, "key": key}


def pick(value: str | None, options: list, default: Any) -> Any:
    """``value`` (from the URL, as text) when it names one of ``options``, else ``default``."""
    for o in options:
        if str(o) == str(value):
            return o
    return default


def control(page: str, key: str, label: str, options: list[dict], value: Any, width: str = "12rem") -> html.Div:
    """A labelled dropdown whose value is mirrored in the URL."""
    return html.Div([html.Label(label, style={"fontSize": "0.8rem", "color": "#555"}),
                     dcc.Dropdown(id=qid(page, key), options=options, value=value, clearable=False)],
                    style={"width": width, "display": "inline-block", "marginRight": "1rem", "verticalAlign": "top"})


def experiment_control(root: Path, page: str, query: Query) -> tuple[html.Div, data.Experiment]:
    """The experiment (model/compression) picker and the experiment the URL selects."""
    exp = data.find_experiment(root, query.get("exp"))
    options = [{"label": e.key, "value": e.key} for e in data.experiments(root)]
    return control(page, "exp", "model / compression", options, exp.key, "16rem"), exp


def variant_options(exp: data.Experiment, with_original: bool = False) -> list[dict]:
    return [{"label": v, "value": v} for v in exp.variants if with_original or v != "original"]


def notice(text: str, kind: str = "info") -> html.Div:
    """A visible message in the page (missing artifacts, refused input) instead of a traceback."""
    colors = {"info": ("#eef4fb", "#2a5d9f"), "error": ("#fdecea", "#a12622")}
    bg, fg = colors[kind]
    return html.Div(text, className=f"notice notice-{kind}",
                    style={"background": bg, "color": fg, "padding": "0.6rem 0.9rem", "margin": "0.5rem 0",
                           "borderRadius": "4px", "whiteSpace": "pre-wrap"})


def guarded(fn: Callable) -> Callable:
    """Turn a ProbeError raised while building a page part into a notice in its place."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProbeError as exc:
            return notice(str(exc), "error")

    return wrapper


def table(rows: list[dict], table_id: str | None = None, page_size: int = 20, **kwargs: Any) -> dash_table.DataTable:
    """A plain sortable table of dict rows (lists are shown joined)."""
    cols = list(dict.fromkeys(k for r in rows for k in r if k != "id"))
    clean = [{k: (", ".join(map(str, v)) if isinstance(v, list | tuple) else v) for k, v in r.items()} for r in rows]
    extra = {"id": table_id} if table_id else {}
    return dash_table.DataTable(data=clean, columns=[{"name": c, "id": c} for c in cols], page_size=page_size,
                                sort_action="native", style_table={"overflowX": "auto"},
                                style_cell={"fontFamily": "sans-serif", "fontSize": "0.85rem", "textAlign": "left",
                                            "maxWidth": "28rem", "overflow": "hidden", "textOverflow": "ellipsis"},
                                style_header={"fontWeight": "bold"}, **extra, **kwargs)


def graph(graph_id: str | dict, fig: go.Figure | None = None, height: int = 380) -> dcc.Graph:
    return dcc.Graph(id=graph_id, figure=fig if fig is not None else go.Figure(),
                     style={"height": f"{height}px"}, config={"displaylogo": False})


def empty_figure(text: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(xaxis_visible=False, yaxis_visible=False, margin={"t": 30, "b": 20})
    return fig


def probe_options(root: Path, exp: data.Experiment) -> list[dict]:
    rows = data.probes(root, exp.model, exp.runs[reference_variant(exp)])
    return [{"label": f"{p['index']} · {p['subject']} → {p['object']} ({p['relation']})", "value": p["index"]}
            for p in rows]


def reference_variant(exp: data.Experiment) -> str:
    """The variant whose capture supplies the probe table: the original when captured."""
    if not exp.runs:
        raise ProbeError(f"no complete capture for {exp.key}: run `probe capture --model {exp.model} --variant "
                         f"original --split all`")
    return "original" if "original" in exp.runs else exp.variants[0]


def layers(root: Path, exp: data.Experiment) -> list[int]:
    """Layers every captured variant recorded."""
    sets = [set(data.open_capture(root, exp.model, r).manifest.get("layers", [])) for r in exp.runs.values()]
    return sorted(set.intersection(*sets)) if sets else []


def n_heads(root: Path, exp: data.Experiment, layer: int) -> int:
    r = exp.runs[reference_variant(exp)]
    name = data.hook(root, exp.model, r, "pattern", layer)
    shape = data.open_capture(root, exp.model, r).manifest.get("shapes", {}).get(name)
    return int(shape[1]) if shape else 0


def attention_figure(root: Path, exp: data.Experiment, variant: str, layer: int, head: int, probe: int) -> go.Figure:
    """Heatmaps side by side: the original's and ``variant``'s attention for one probe at one layer/head."""
    shown = [v for v in dict.fromkeys(("original", variant)) if v in exp.runs]
    maps = {v: data.attention(root, exp.model, exp.runs[v], layer, head, probe) for v in shown}
    kind = next(iter(maps.values()))[1]
    fact = data.probes(root, exp.model, exp.runs[shown[0]])[probe]
    what = "mean of heads" if head < 0 else f"head {head}"
    fig = make_subplots(rows=1, cols=len(shown), subplot_titles=shown, horizontal_spacing=0.08)
    for i, (v, (z, _)) in enumerate(maps.items(), start=1):
        fig.add_trace(go.Heatmap(z=z, zmin=0, zmax=float(max(np.nanmax(m[0]) for m in maps.values()) or 1),
                                 colorscale="Viridis", showscale=i == len(shown), name=v,
                                 hovertemplate="query %{y}, key %{x}: %{z:.3f}<extra>" + v + "</extra>"),
                      row=1, col=i)
        fig.update_xaxes(title_text="key token", row=1, col=i)
        fig.update_yaxes(title_text="query token" if kind == "full" else "last token", autorange="reversed",
                         row=1, col=i)
    scope = "full map" if kind == "full" else "last token's row (full maps exist for the first --full-attention probes)"
    fig.update_layout(title=f"probe {probe} “{fact['prompt']}” · layer {layer}, {what} · {scope}",
                      title_font_size=13, margin={"t": 70, "b": 40})
    return fig
