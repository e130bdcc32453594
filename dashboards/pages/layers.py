"""Layers: per-layer divergence and CKA for every variant vs the original, cross-layer CKA, logit-lens curves,
the activation-patching curve and the lost answers' rank distributions."""

from __future__ import annotations

from pathlib import Path

from dash import Dash, Input, Output, html

from dashboards import data
from dashboards.pages.common import (
    Query,
    control,
    empty_figure,
    experiment_control,
    graph,
    notice,
    pick,
    qid,
    styled,
)
from probe.errors import ProbeError

PATH, TITLE, PAGE = "/layers", "Layers", "layers"
LENS_FIGURES = ("lens_log1p_answer_rank", "lens_answer_prob", "lens_answer_top1")
CAUSAL_FIGURES = (("patching_curves", "no activation patching in this analysis (the compressed model must be built "
                                      "here; `probe analyze --patching --force`)"),
                  ("ranks_median", "no lost facts: no rank curves"),
                  ("ranks_distribution", "no lost facts: no rank distribution"),
                  ("replacements", "no lost facts: nothing replaced"))


def _names(root: Path, exp: data.Experiment, prefix: str) -> list[str]:
    return [n.removeprefix(prefix) for n in data.figure_names(root, exp) if n.startswith(prefix)]


def layout(root: Path, query: Query) -> html.Div:
    picker, exp = experiment_control(root, PAGE, query)
    head = [html.H2("Layers"), picker]
    if not exp.analysis:
        head.append(notice(f"no analysis of {exp.key} yet: run `probe analyze --model {exp.model} --compression "
                           f"{exp.compression}` (captures found: {', '.join(exp.variants) or 'none'})"))
    metrics = _names(root, exp, "divergence_")
    crosses = _names(root, exp, "cross_cka_")
    lenses = [n for n in LENS_FIGURES if n in data.figure_names(root, exp)]
    return html.Div([
        *head,
        control(PAGE, "metric", "divergence metric", [{"label": m, "value": m} for m in metrics],
                pick(query.get("metric"), metrics, metrics[0] if metrics else None), "18rem"),
        control(PAGE, "cross", "cross-layer CKA of", [{"label": v, "value": v} for v in crosses],
                pick(query.get("cross"), crosses, crosses[0] if crosses else None)),
        control(PAGE, "lens", "logit-lens curve", [{"label": n.removeprefix("lens_"), "value": n} for n in lenses],
                pick(query.get("lens"), lenses, lenses[0] if lenses else None), "16rem"),
        html.Div([graph("layers-divergence"), graph("layers-cka", data.figure(root, exp, "cka_cka")
                                                            or empty_figure("no CKA figure"))],
                 style={"display": "grid", "gridTemplateColumns": "1fr 1fr"}),
        html.Div([graph("layers-cross", height=460), graph("layers-lens", height=460)],
                 style={"display": "grid", "gridTemplateColumns": "1fr 1fr"}),
        html.H3("Where lost facts are lost"),
        html.Div([graph(f"layers-{name}", data.figure(root, exp, name) or empty_figure(missing), height=460)
                  for name, missing in CAUSAL_FIGURES],
                 style={"display": "grid", "gridTemplateColumns": "1fr 1fr"}),
    ])


def figures(root: Path, exp_key: str, metric: str | None, cross: str | None, lens: str | None) -> tuple:
    """The divergence, cross-layer CKA and logit-lens figures for the chosen metric, variant and curve."""
    try:
        exp = data.find_experiment(root, exp_key)
    except ProbeError as exc:
        return (empty_figure(str(exc)),) * 3
    out = []
    for name, what in ((f"divergence_{metric}", "divergence"), (f"cross_cka_{cross}", "cross-layer CKA"),
                       (lens, "logit lens")):
        fig = data.figure(root, exp, name) if name and not name.endswith("None") else None
        out.append(styled(fig) if fig is not None else empty_figure(f"no {what} figure in the analysis of {exp.key}"))
    return tuple(out)


def register(app: Dash, root: Path) -> None:
    app.callback(Output("layers-divergence", "figure"), Output("layers-cross", "figure"),
                 Output("layers-lens", "figure"),
                 Input(qid(PAGE, "exp"), "value"), Input(qid(PAGE, "metric"), "value"),
                 Input(qid(PAGE, "cross"), "value"), Input(qid(PAGE, "lens"), "value"))(
        lambda exp, metric, cross, lens: figures(root, exp, metric, cross, lens))
