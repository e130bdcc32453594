"""The attention page marks a few-shot probe's demonstration columns and shows only its query rows."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.pages.attention import mark_demonstrations


def _figure(prompt_column: bool) -> go.Figure:
    fig = make_subplots(rows=1, cols=2)
    keys = (["⟨p0…p2⟩"] if prompt_column else []) + [f"t{i}" for i in range(6)]
    for col in (1, 2):
        fig.add_trace(go.Heatmap(z=np.ones((6, len(keys)))), row=1, col=col)
        fig.update_xaxes(tickmode="array", ticktext=keys, tickvals=list(range(len(keys))), row=1, col=col)
        fig.update_yaxes(title_text="query token", row=1, col=col)
    return fig


def test_demonstration_columns_are_shaded_and_rows_cropped():
    fig = mark_demonstrations(_figure(prompt_column=True), query_start=4, n_tokens=6)
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 2 and {(r.x0, r.x1) for r in rects} == {(0.5, 4.5)}  # after the prompt column
    assert list(fig.layout.yaxis.range) == [5.5, 3.5] and list(fig.layout.yaxis2.range) == [5.5, 3.5]
    plain = mark_demonstrations(_figure(prompt_column=False), query_start=4, n_tokens=6)
    assert {(s.x0, s.x1) for s in plain.layout.shapes} == {(-0.5, 3.5)}
    assert mark_demonstrations(_figure(False), query_start=0, n_tokens=6).layout.shapes == ()
