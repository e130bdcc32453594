"""Verdict: the decision figure first (each share against its measured baseline), then the paragraph and tables.

Tables label every number in words; each share is shown as ``mean [lo, hi]`` with its 95%
cluster-bootstrap interval and the number of facts it is over.
"""

from __future__ import annotations

from pathlib import Path

from dash import Dash, dcc, html

from dashboards import data
from dashboards.pages.common import Query, experiment_control, graph, notice, table

PATH, TITLE, PAGE = "/verdict", "Verdict", "verdict"
PLOTS = ("decodability_lens_vs_probe", "patching_curves", "ranks_median", "replacements", "cka_cka",
         "lens_answer_top1")


def _pct(value: object) -> str:
    """An interval dict as ``61% [52, 70] of 120 facts``; a missing one as ``—``."""
    if not isinstance(value, dict) or value.get("mean") is None:
        return "—"
    return f"{value['mean'] * 100:.0f}% [{value['lo'] * 100:.0f}, {value['hi'] * 100:.0f}] of {value.get('n')} facts"


def _points(value: object) -> str:
    if not isinstance(value, dict) or value.get("mean") is None:
        return "—"
    return f"{value['mean'] * 100:+.0f} [{value['lo'] * 100:+.0f}, {value['hi'] * 100:+.0f}] points"


def decision_rows(verdict: dict) -> list[dict]:
    """The decodable share of lost facts and every measured baseline, in words."""
    rows = [{"what": "Lost facts whose answer the probe on the compressed model still picks",
             "share [95% interval]": _pct(verdict.get("decodable_lost")), "lost facts minus this": ""}]
    base = verdict.get("baselines") or {}
    for f in base.get("floors", []):
        rows.append({"what": f"Floor — {f['baseline']}", "share [95% interval]": _pct(f["baseline_share"]),
                     "lost facts minus this": _points(f["difference"])})
    if base.get("ceiling"):
        c = base["ceiling"]
        rows.append({"what": f"Ceiling — {c['baseline']}", "share [95% interval]": _pct(c["baseline_share"]),
                     "lost facts minus this": _points(c["difference"])})
    rows.append({"what": "Uniform guess among the candidates (reference only)",
                 "share [95% interval]": "—" if verdict.get("uniform_chance") is None
                 else f"{verdict['uniform_chance'] * 100:.0f}%", "lost facts minus this": ""})
    return rows


def headline_rows(verdict: dict) -> list[dict]:
    """The other headline numbers, labelled in words."""
    probe = verdict.get("probe") or {}
    norm = verdict.get("normalised_decodable") or {}
    rows = [
        ("Eval facts", verdict.get("n_eval")),
        ("Answered top-1 by the original", _pct(verdict.get("known_original"))),
        ("Answered top-1 by the compressed model", _pct(verdict.get("known_compressed"))),
        ("Facts compression loses (the original answers, the compressed model does not)", verdict.get("n_lost")),
        ("Facts neither model answers", verdict.get("n_never")),
        ("Decision", verdict.get("decision") or "none (too few lost facts)"),
        ("Layer of the decodability probe (chosen on other facts)", verdict.get("layer")),
        ("Probe: inverse regularisation C and principal components (chosen on training facts)",
         f"C {probe.get('c')}, {probe.get('rank')} components" if probe else "—"),
        ("Lost facts between floor (0) and ceiling (1)",
         "—" if norm.get("mean") is None else f"{norm['mean']:.2f} [{norm['lo']:.2f}, {norm['hi']:.2f}]"),
        ("Lost facts the plain logit lens still picks among the candidates", _pct(verdict.get("lens_lost"))),
        ("Lost facts whose answer the compressed output still ranks first among the candidates",
         _pct(verdict.get("output_ranks_answer_first_lost"))),
    ]
    return [{"number": k, "value": "—" if v is None else str(v)} for k, v in rows]


def recovery_rows(verdict: dict) -> list[dict]:
    return [{"recovery": r["variant"], "lost facts regained": r["regained"],
             "facts neither model knew, gained": r["gained_unknown_to_original"],
             "facts the compressed model knew, newly broken": r["newly_broken"], "net change": r["net"],
             "exact McNemar p vs the compressed model": f"{r['mcnemar_p']:.2g}",
             "Holm-corrected p": f"{r['mcnemar_p_holm']:.2g}"} for r in verdict.get("net_recovery", [])]


REGIME_WORDS = {"regained": "lost facts regained", "delta_cka": "debiased CKA with the original, minus the compressed "
                "model's (mean over layers)", "prompt_mass": "attention on its prompt (last token, mean over layers "
                "and heads)", "attn_shift": "attention shift from the compressed model (Jensen–Shannon, nats)",
                "mlp_change": "MLP-output change from the compressed model (relative L2)",
                "attn_out_change": "attention-output change from the compressed model (relative L2)"}


def regime_rows(regimes: list[dict]) -> list[dict]:
    """How each recovery acts, in words, with intervals."""
    out = []
    for r in regimes:
        if r.get("mean") is None:
            continue
        value = (f"{r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]" if r["metric"] in ("delta_cka", "attn_shift")
                 else _pct(r))
        out.append({"recovery": r["variant"], "what": REGIME_WORDS.get(r["metric"], r["metric"]),
                    "value [95% interval]": value})
    return out


def patching_rows(verdict: dict) -> list[dict]:
    p = verdict.get("patching") or {}
    if "facts_patched" not in p:
        return []
    s = p.get("sanity", {})
    return [{"number": k, "value": str(v)} for k, v in (
        ("Lost facts patched", p["facts_patched"]), ("Of them lost in this run", p["lost_in_this_run"]),
        ("Restored by the last layer's residual at every position (sanity: all)",
         f"{s.get('restored_by_last_layer_everywhere')} of {s.get('of')}"),
        ("Seconds per fact and layer (both directions, both position sets)",
         f"{p['seconds_per_fact_layer']:.3f}"))]


def layout(root: Path, query: Query) -> html.Div:
    picker, exp = experiment_control(root, PAGE, query)
    verdict = data.analysis_json(root, exp, "verdict.json")
    if not isinstance(verdict, dict):
        return html.Div([html.H2("Verdict"), picker,
                         notice(f"no verdict for {exp.key} yet: run `probe analyze --model {exp.model} --compression "
                                f"{exp.compression}` (needs complete original and compressed captures; found "
                                f"{', '.join(exp.variants) or 'none'})")])
    decision = data.figure(root, exp, "verdict_decision")
    summary = data.analysis_json(root, exp, "summary.json") or []
    text = data.analysis_text(root, exp, "verdict.md") or verdict.get("verdict", "")
    text = text.replace("[", "\\[").replace("]", "\\]")  # intervals, not markdown links
    plots = [graph(f"verdict-{name}", fig) for name in PLOTS if (fig := data.figure(root, exp, name)) is not None]
    recoveries = recovery_rows(verdict)
    regimes = regime_rows(data.analysis_json(root, exp, "regimes.json") or [])
    patching = patching_rows(verdict)
    return html.Div([
        html.H2("Verdict"), picker,
        graph("verdict-decision", decision, height=320) if decision is not None
        else notice("no decision figure (too few lost facts, or an analysis from an older version: rerun "
                    "`probe analyze --force`)"),
        dcc.Markdown(text, id="verdict-text", style={"maxWidth": "60rem"}),
        html.P(verdict.get("decodability", ""), style={"color": "#666"}),
        html.H3("The decodable share against its measured baselines"), table(decision_rows(verdict)),
        html.H3("Headline numbers"), table(headline_rows(verdict)),
        html.H3("Per variant"), table(summary) if summary else notice("no summary table"),
        html.H3("Recoveries against the compressed model"),
        table(recoveries) if recoveries else notice(f"no recovery captures: run `probe capture --variant "
                                                    f"prompt|prefix|idp|lora --compression {exp.compression}` then "
                                                    f"`probe analyze --force`"),
        html.H3("How each recovery acts"), table(regimes) if regimes else notice("no recovery captures"),
        html.H3("Activation patching"),
        table(patching) if patching else notice((verdict.get("patching") or {}).get("note") or "no patching"),
        html.H3("The plots behind it"),
        html.Div(plots, style={"display": "grid", "gridTemplateColumns": "1fr 1fr"}),
    ])


def register(app: Dash, root: Path) -> None:
    """The verdict page has no interactive callbacks beyond the experiment picker."""
