"""Figures: the decision against its baselines, line plots (mean with its 95% interval per variant over layers),
patching curves, lost answers' ranks, what replaced them, and cross-layer CKA heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from probe.analysis.spec import VARIANT_ORDER


def _bars(r: list[dict]) -> dict:
    return {"type": "data", "symmetric": False, "array": [x["hi"] - x["mean"] for x in r],
            "arrayminus": [x["mean"] - x["lo"] for x in r]}


def decision_figure(verdict: dict) -> go.Figure | None:
    """The decision at a glance: the lost facts' decodable share beside each measured baseline, with intervals."""
    share = verdict.get("decodable_lost") or {}
    if share.get("mean") is None:
        return None
    base = verdict.get("baselines") or {}
    points = [("lost facts: still decodable", share)]
    for f in base.get("floors", []):
        points.append((f"floor: {f['baseline']}", f["baseline_share"]))
    if base.get("ceiling"):
        points.append((f"ceiling: {base['ceiling']['baseline']}", base["ceiling"]["baseline_share"]))
    points = [(name, iv) for name, iv in points if iv.get("mean") is not None]
    fig = go.Figure(go.Scatter(
        x=[iv["mean"] * 100 for _, iv in points], y=[name for name, _ in points], mode="markers",
        marker={"size": 12, "color": ["#d62728"] + ["#7f7f7f"] * (len(points) - 1)},
        error_x={"type": "data", "symmetric": False, "array": [(iv["hi"] - iv["mean"]) * 100 for _, iv in points],
                 "arrayminus": [(iv["mean"] - iv["lo"]) * 100 for _, iv in points]}))
    if verdict.get("uniform_chance") is not None:
        fig.add_vline(x=verdict["uniform_chance"] * 100, line_dash="dot", annotation_text="uniform guess")
    fig.update_layout(title=f"Decision: {verdict.get('decision') or 'none'} (answer picked among its candidates at "
                            f"layer {verdict.get('layer')}, 95% cluster-bootstrap intervals)",
                      xaxis_title="% of facts whose answer the probe picks", xaxis_range=[0, 100],
                      yaxis={"autorange": "reversed"}, margin={"l": 320})
    return fig


def _extra_figures(rows: dict[str, list[dict]]) -> dict[str, go.Figure]:
    """Patching curves, lost answers' ranks per layer and what replaced them."""
    figs: dict[str, go.Figure] = {}
    patch = [r for r in rows.get("patching", []) if r["answer"] == "first"]
    if patch:
        fig = go.Figure()
        for direction, dash in (("restored", "solid"), ("broken", "dash")):
            for mode in ("last", "subject"):
                sel = [r for r in patch if r["direction"] == direction and r["mode"] == mode]
                if sel:
                    what = ("lost facts restored (original → compressed)" if direction == "restored"
                            else "facts broken (compressed → original)")
                    fig.add_scatter(x=[r["layer"] for r in sel], y=[r["mean"] for r in sel], mode="lines+markers",
                                    name=f"{what}, {'last token' if mode == 'last' else 'subject tokens'}",
                                    line={"dash": dash}, error_y=_bars(sel))
        fig.update_layout(title="Activation patching per layer: share of lost facts whose answer's first token "
                                "becomes (or stops being) top-1 (95% cluster-bootstrap intervals)",
                          xaxis_title="patched layer", yaxis_title="share of lost facts", yaxis_range=[0, 1])
        figs["patching_curves"] = fig
    ranks = rows.get("ranks", [])
    med = [r for r in ranks if r["statistic"].startswith("median")]
    if med:
        fig = go.Figure()
        for v in ("original", "compressed"):
            sel = [r for r in med if r["variant"] == v]
            fig.add_scatter(x=[r["layer"] for r in sel], y=[r["mean"] + 1 for r in sel], name=v, mode="lines+markers",
                            error_y=_bars(sel))
        fig.update_layout(title="Lost facts: the answer's median full-vocabulary rank through the logit lens "
                                "(1 = top-1; 95% cluster-bootstrap intervals)",
                          xaxis_title="layer", yaxis_title="median rank", yaxis_type="log")
        figs["ranks_median"] = fig
        fig = go.Figure()
        for v, dash in (("original", "dot"), ("compressed", "solid")):
            for label in dict.fromkeys(r["statistic"] for r in ranks if r["statistic"].startswith("share")):
                sel = [r for r in ranks if r["variant"] == v and r["statistic"] == label]
                fig.add_scatter(x=[r["layer"] for r in sel], y=[r["mean"] for r in sel], mode="lines",
                                name=f"{v}: {label[len('share at '):]}", line={"dash": dash})
        fig.update_layout(title="Lost facts: where the answer ranks, per layer (solid: compressed, dotted: original)",
                          xaxis_title="layer", yaxis_title="share of lost facts", yaxis_range=[0, 1])
        figs["ranks_distribution"] = fig
    rep = rows.get("replacements", [])
    if rep:
        fig = go.Figure()
        for facts in dict.fromkeys(r["facts"] for r in rep):
            sel = [r for r in rep if r["facts"] == facts]
            fig.add_bar(x=[r["replaced by"] for r in sel], y=[r["mean"] for r in sel], name=facts, error_y=_bars(sel))
        fig.update_layout(title="What the model outputs instead of the answer (95% cluster-bootstrap intervals)",
                          yaxis_title="share of facts", barmode="group")
        figs["replacements"] = fig
    return figs


def write_figures(folder: Path, rows: dict[str, list[dict]], verdict: dict | None = None) -> list[str]:
    """Plotly JSON and HTML of every per-layer table under ``folder/figures``; returns the figure names."""
    figs: dict[str, go.Figure] = _extra_figures(rows)
    decision = decision_figure(verdict or {})
    if decision is not None:
        figs["verdict_decision"] = decision
    for table in ("divergence", "lens", "decodability", "cka"):
        selected = [r for r in rows.get(table, []) if r.get("head", -1) == -1 and r.get("facts", "eval") == "eval"
                    and r.get("probe") != "shuffled"]
        for metric in sorted({r.get("metric", r.get("probe", table)) for r in selected}):
            fig = go.Figure()
            for v in VARIANT_ORDER:
                sel = [r for r in selected if r["variant"] == v and r.get("metric", r.get("probe", table)) == metric]
                if not sel:
                    continue
                fig.add_scatter(x=[r["layer"] for r in sel], y=[r["mean"] for r in sel], name=v, mode="lines+markers",
                                error_y={"type": "data", "symmetric": False,
                                         "array": [r["hi"] - r["mean"] for r in sel],
                                         "arrayminus": [r["mean"] - r["lo"] for r in sel]})
            what = "debiased linear CKA, 95% half-sample intervals" if table == "cka" else "95% bootstrap intervals"
            fig.update_layout(title=f"{table}: {metric} ({what})", xaxis_title="layer",
                              yaxis_title=metric)
            figs[f"{table}_{metric}"] = fig
    dec = [r for r in rows.get("decodability", []) if r.get("facts") == "eval" and r["probe"] in ("lens", "own")]
    if dec:
        fig = go.Figure()
        for v in VARIANT_ORDER:
            for probe, dash in (("own", "solid"), ("lens", "dot")):
                sel = [r for r in dec if r["variant"] == v and r["probe"] == probe]
                if sel:
                    fig.add_scatter(x=[r["layer"] for r in sel], y=[r["mean"] for r in sel], mode="lines+markers",
                                    name=f"{v}: {'probe' if probe == 'own' else 'lens'}", line={"dash": dash},
                                    error_y={"type": "data", "symmetric": False,
                                             "array": [r["hi"] - r["mean"] for r in sel],
                                             "arrayminus": [r["mean"] - r["lo"] for r in sel]})
        fig.update_layout(title="decodability: trained probe (solid) vs plain lens over the candidates (dotted)",
                          xaxis_title="layer", yaxis_title="answer picked among its candidates")
        figs["decodability_lens_vs_probe"] = fig
    for v in VARIANT_ORDER:
        sel = [r for r in rows.get("cross_cka", []) if r["variant"] == v]
        if sel:
            xs, ys = sorted({r["original_layer"] for r in sel}), sorted({r["layer"] for r in sel})
            z = np.full((len(ys), len(xs)), np.nan)
            for r in sel:
                z[ys.index(r["layer"]), xs.index(r["original_layer"])] = r["cka"]
            fig = go.Figure(go.Heatmap(z=z, x=xs, y=ys, zmin=0, zmax=1, colorscale="Viridis"))
            fig.update_layout(title=f"cross-layer biased linear CKA: {v} layer (y) vs original layer (x)",
                              xaxis_title="original layer", yaxis_title=f"{v} layer")
            figs[f"cross_cka_{v}"] = fig
    (folder / "figures").mkdir()
    for name, fig in figs.items():
        fig.write_json(folder / "figures" / f"{name}.json")
        fig.write_html(folder / "figures" / f"{name}.html", include_plotlyjs="directory")
    return sorted(figs)
