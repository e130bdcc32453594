"""Verdict: the displaced-vs-forgotten paragraph, its numbers with intervals, and the plots behind them."""

from __future__ import annotations

from pathlib import Path

from dash import Dash, dcc, html

from dashboards import data
from dashboards.pages.common import Query, experiment_control, graph, notice, table

PATH, TITLE, PAGE = "/verdict", "Verdict", "verdict"
PLOTS = ("decodability_own", "decodability_transfer", "cka_cka", "lens_answer_top1")


def _fmt(value: object) -> str:
    """An interval dict as ``mean [lo, hi] (n)``; other values as text."""
    if isinstance(value, dict) and "mean" in value:
        if value.get("mean") is None:
            return "—"
        return f"{value['mean']:.3f} [{value.get('lo', float('nan')):.3f}, {value.get('hi', float('nan')):.3f}] " \
               f"(n={value.get('n')})"
    return "—" if value is None else str(value)


def layout(root: Path, query: Query) -> html.Div:
    picker, exp = experiment_control(root, PAGE, query)
    verdict = data.analysis_json(root, exp, "verdict.json")
    if not isinstance(verdict, dict):
        return html.Div([html.H2("Verdict"), picker,
                         notice(f"no verdict for {exp.key} yet: run `probe analyze --model {exp.model} --compression "
                                f"{exp.compression}` (needs complete original and compressed captures; found "
                                f"{', '.join(exp.variants) or 'none'})")])
    numbers = [{"number": k, "value (95% interval)": _fmt(v)} for k, v in verdict.items()
               if k not in ("verdict", "decodability")]
    summary = data.analysis_json(root, exp, "summary.json") or []
    regimes = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
               for r in data.analysis_json(root, exp, "regimes.json") or []]
    text = data.analysis_text(root, exp, "verdict.md") or verdict.get("verdict", "")
    text = text.replace("[", "\\[").replace("]", "\\]")  # intervals, not markdown links
    plots = [graph(f"verdict-{name}", fig) for name in PLOTS if (fig := data.figure(root, exp, name)) is not None]
    return html.Div([
        html.H2("Verdict"), picker,
        dcc.Markdown(text, id="verdict-text",
                     style={"maxWidth": "60rem"}),
        html.P(verdict.get("decodability", ""), style={"color": "#666"}),
        html.H3("Headline numbers"), table(numbers),
        html.H3("Per variant"), table(summary) if summary else notice("no summary table"),
        html.H3("Recoveries on the lost facts"),
        table(regimes) if regimes else notice(f"no recovery captures: run `probe capture --variant "
                                              f"prompt|prefix|idp|lora --compression {exp.compression}` then "
                                              f"`probe analyze --force`"),
        html.H3("The plots behind it"),
        html.Div(plots, style={"display": "grid", "gridTemplateColumns": "1fr 1fr"}),
    ])


def register(app: Dash, root: Path) -> None:
    """The verdict page has no interactive callbacks beyond the experiment picker."""
