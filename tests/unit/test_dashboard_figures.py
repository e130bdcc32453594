"""The dashboard's figure frame, the attention map's prompt column and token labels, and its waitress server."""

from __future__ import annotations

import threading
import urllib.request

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.app import make_server
from dashboards.pages.common import (
    SUBPLOT_TITLE_PX,
    TITLE_LINE_PX,
    TOOLBAR_PX,
    prompt_label,
    styled,
    token_text,
    with_prompt_column,
)


def test_the_prompt_column_holds_the_prompt_mass_and_rows_sum_to_one():
    rng = np.random.default_rng(0)
    maps = rng.random((4, 5, 5))
    maps /= maps.sum(-1, keepdims=True)  # rows over the real keys, renormalised as the capture stores them
    mass = rng.random((4, 5))
    spent = with_prompt_column(maps, mass)
    assert spent.shape == (4, 5, 6)
    np.testing.assert_allclose(spent[..., 0], mass)
    np.testing.assert_allclose(spent.sum(-1), 1)
    np.testing.assert_allclose(spent[..., 1:] / spent[..., 1:].sum(-1, keepdims=True), maps)  # shape kept


def test_token_and_prompt_labels():
    assert [token_text(t) for t in (" Paris", "is", " ", "\n", "<s>")] == ["Paris", "is", "␣", "⏎", "<s>"]
    assert prompt_label(1) == "⟨p0⟩" and prompt_label(8) == "⟨p0…p7⟩"


def test_titles_start_under_the_toolbar_and_the_top_margin_fits_them():
    one = styled(go.Figure(layout={"title": "a title", "margin": {"t": 5}}))
    two = styled(go.Figure(layout={"title": "a title<br>on two lines"}))
    subplots = styled(make_subplots(rows=1, cols=2, subplot_titles=("left", "right")).update_layout(title="t"))
    bare = styled(go.Figure())
    assert one.layout.title.yref == "container" and one.layout.title.yanchor == "top"
    assert one.layout.title.pad.t == TOOLBAR_PX
    assert one.layout.margin.t >= TOOLBAR_PX + TITLE_LINE_PX
    assert two.layout.margin.t == one.layout.margin.t + TITLE_LINE_PX
    assert subplots.layout.margin.t == one.layout.margin.t + SUBPLOT_TITLE_PX
    assert TOOLBAR_PX <= bare.layout.margin.t < one.layout.margin.t


def test_waitress_serves_the_app_on_loopback(tmp_path):
    server = make_server(tmp_path, port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert server.effective_host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.effective_port}/_dash-layout", timeout=30) as r:
            assert r.status == 200 and r.headers["Server"] == "probe dashboard"
            assert b'"page"' in r.read()
    finally:
        server.close()
        thread.join(timeout=10)
