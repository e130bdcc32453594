"""Pieces every page shares: URL-state controls, notices, tables, the figure frame and the attention figure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


def notice(text: str, kind: str = "info", className: str = "") -> html.Div:
    """A visible message in the page (missing artifacts, refused input) instead of a traceback."""
    colors = {"info": ("#eef4fb", "#2a5d9f"), "error": ("#fdecea", "#a12622")}
    bg, fg = colors[kind]
    return html.Div(text, className=f"notice notice-{kind} {className}".strip(),
                    style={"background": bg, "color": fg, "padding": "0.6rem 0.9rem", "margin": "0.5rem 0",
                           "borderRadius": "4px", "whiteSpace": "pre-wrap"})


def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour)."""
    s = int(max(0.0, float(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def waiting(root: Path, kind: str, what: str, command: str) -> html.Div:
    """In place of a result that does not exist yet: which stage of the running experiment produces it (its state,
    time and command), else the command that does."""
    stage = data.stage_for(root, kind)
    if stage is None:
        return notice(f"{what}: not here yet; `{command}` produces it (or `probe demo` / `probe run FILE`, "
                      f"whose Overview shows each stage)")
    state = stage.get("state", "pending")
    when = {"running": f"running for {clock(stage.get('elapsed') or 0)} of about {clock(stage.get('estimate') or 0)}",
            "pending": f"pending, about {clock(stage.get('estimate') or 0)} once it starts",
            "failed": "failed (see the Study table above, or the terminal)"}.get(state, state)
    if stage.get("experiment_state") in ("stopped", "interrupted", "failed") and state != "failed":
        when += f"; the experiment {stage['experiment_state']}: rerun it to go on"
    return notice(f"{what}: not here yet. Stage “{stage.get('label')}” of experiment {stage.get('experiment')} "
                  f"produces it ({when}); by hand: `{stage.get('command')}`. This page fills in by itself.",
                  className="waiting")


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


# The plot toolbar (modebar) sits in the top 30 px of every graph, over its right side: titles start
# below it, so no title is ever hidden under it whatever its length or the graph's width.
TOOLBAR_PX, TITLE_LINE_PX, SUBPLOT_TITLE_PX, GAP_PX = 30, 19, 22, 10


def styled(fig: go.Figure) -> go.Figure:
    """Every figure's frame (all pages): the title left-aligned under the plot toolbar, a top margin that fits it
    (one more line per ``<br>``, room for subplot titles), compact side margins. Returns ``fig``, changed."""
    text = fig.layout.title.text or ""
    lines = text.count("<br>") + 1 if text else 0
    subplot_titles = any(a.yref == "paper" and a.yanchor == "bottom" and (a.y or 0) >= 1
                         for a in fig.layout.annotations)
    top = TOOLBAR_PX + lines * TITLE_LINE_PX + (SUBPLOT_TITLE_PX if subplot_titles else 0) + GAP_PX
    fig.update_layout(title={"x": 0, "xref": "container", "xanchor": "left", "y": 1, "yref": "container",
                             "yanchor": "top", "pad": {"t": TOOLBAR_PX, "l": 12}, "font": {"size": 14}},
                      margin={"t": top, "l": 60, "r": 30, "b": 50})
    return fig


def graph(graph_id: str | dict, fig: go.Figure | None = None, height: int = 380) -> dcc.Graph:
    return dcc.Graph(id=graph_id, figure=styled(fig if fig is not None else go.Figure()),
                     style={"height": f"{height}px"}, config={"displaylogo": False})


def empty_figure(text: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(xaxis_visible=False, yaxis_visible=False)
    return styled(fig)


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


def token_text(token: str) -> str:
    """A token as an axis label: its text without surrounding spaces; a space alone as ␣, a newline as ⏎."""
    text = token.replace("\n", "⏎").strip()
    return text or "␣"


def prompt_label(n: int) -> str:
    """The key label of a variant's prompt positions, summed into one column: ⟨p0…p7⟩."""
    return "⟨p0⟩" if n == 1 else f"⟨p0…p{n - 1}⟩"


def with_prompt_column(maps: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """Attention as the model spent it: ``[H, Q, K]`` rows over the real keys (renormalised, as captured) and the
    prompt positions' mass ``[H, Q]`` → ``[H, Q, 1 + K]``: the prompt's mass first, the real keys scaled by the rest."""
    return np.concatenate([mass[..., None], maps * (1 - mass[..., None])], axis=-1)


@dataclass(frozen=True)
class AttentionView:
    """One variant's attention for one probe at one layer, head or mean of heads, with its axis labels."""

    z: np.ndarray  # [queries, keys]
    kind: str  # "full" (every query) or "last" (the last token's row)
    queries: list[str]
    keys: list[str]  # the prompt column first when n_prompt > 0
    n_prompt: int  # the variant's prompt positions, summed into the first column (0: none)


def attention_view(root: Path, exp: data.Experiment, variant: str, layer: int, head: int, probe: int) -> AttentionView:
    """The captured map with the probe's tokens on both axes (decoded from the stored ids); for prompt variants
    (prompt, prefix, IDP) a first key column holds the attention mass on the prompt positions."""
    run = exp.runs[variant]
    z, kind = data.attention(root, exp.model, run, layer, head, probe)
    fact = data.probes(root, exp.model, run)[probe]
    labels = [token_text(t) for t in data.token_labels(root, exp.model, run, probe)]
    queries = labels if kind == "full" else [labels[fact.get("last", -1)]]
    mass = data.attention_prompt_mass(root, exp.model, run, layer, probe, kind)
    if mass is None:
        return AttentionView(z, kind, queries, labels, 0)
    heads = np.stack([data.attention(root, exp.model, run, layer, h, probe)[0] for h in range(mass.shape[0])])
    spent = with_prompt_column(heads, mass)
    n = data.prompt_length(root, exp.model, run)
    return AttentionView(spent.mean(0) if head < 0 else spent[head], kind, queries, [prompt_label(n), *labels], n)


def attention_figure(root: Path, exp: data.Experiment, variant: str, layer: int, head: int, probe: int) -> go.Figure:
    """Heatmaps side by side: the original's and ``variant``'s attention for one probe at one layer/head,
    both axes labelled with the probe's tokens."""
    shown = [v for v in dict.fromkeys(("original", variant)) if v in exp.runs]
    views = {v: attention_view(root, exp, v, layer, head, probe) for v in shown}
    kind = next(iter(views.values())).kind
    zmax = float(max(np.nanmax(m.z) for m in views.values()) or 1)
    fact = data.probes(root, exp.model, exp.runs[shown[0]])[probe]
    what = "mean of heads" if head < 0 else f"head {head}"
    fig = make_subplots(rows=1, cols=len(shown), subplot_titles=shown, horizontal_spacing=0.1)
    for i, (v, view) in enumerate(views.items(), start=1):
        cells = np.dstack(np.broadcast_arrays(np.array(view.queries, object)[:, None],
                                              np.array(view.keys, object)[None, :]))
        fig.add_trace(go.Heatmap(z=view.z, zmin=0, zmax=zmax, colorscale="Viridis", showscale=i == len(shown),
                                 name=v, customdata=cells,
                                 hovertemplate="query %{customdata[0]} → key %{customdata[1]}: %{z:.3f}"
                                               "<extra>" + v + "</extra>"),
                      row=1, col=i)
        fig.update_xaxes(title_text="key token", tickmode="array", tickvals=list(range(len(view.keys))),
                         ticktext=view.keys, tickangle=-60, row=1, col=i)
        fig.update_yaxes(title_text="query token" if kind == "full" else "last token", autorange="reversed",
                         tickmode="array", tickvals=list(range(len(view.queries))), ticktext=view.queries,
                         row=1, col=i)
    scope = "full map" if kind == "full" else "last token's row (full maps exist for the first --full-attention probes)"
    prompted = [f"{v}: first column {prompt_label(m.n_prompt)} = its {m.n_prompt} prompt positions"
                for v, m in views.items() if m.n_prompt]
    fig.update_layout(title=f"probe {probe} “{fact['prompt']}”<br>layer {layer}, {what} · {scope}"
                            + (f" · {'; '.join(prompted)}" if prompted else ""))
    return styled(fig)
