"""Figures: line plots (mean with its 95% band per variant over layers) and cross-layer CKA heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from probe.analysis.spec import VARIANT_ORDER


def write_figures(folder: Path, rows: dict[str, list[dict]]) -> list[str]:
    """Plotly JSON and HTML of every per-layer table under ``folder/figures``; returns the figure names."""
    figs: dict[str, go.Figure] = {}
    for table in ("divergence", "lens", "decodability", "cka"):
        selected = [r for r in rows.get(table, []) if r.get("head", -1) == -1 and r.get("facts", "eval") == "eval"]
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
