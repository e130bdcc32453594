"""The Verdict page's tables and decision figure from a real verdict.json: numbers labelled in words."""

from __future__ import annotations

import json

from dashboards.pages.verdict import decision_rows, headline_rows, patching_rows, regime_rows
from probe.analysis.figures import decision_figure
from probe.analysis.verdict import verdict_text
from probe.analysis.writers import clean, verdict_json
from tests.unit.test_analysis_baselines import _case


def _verdict() -> dict:
    head, _ = _case(lost=0.60, kept=0.95, never=0.25, shuffled=0.25)
    return json.loads(json.dumps(clean(verdict_json(head, verdict_text(head.verdict), "p"))))


def test_tables_label_numbers_in_words_with_intervals():
    verdict = _verdict()
    rows = decision_rows(verdict)
    labels = [r["what"] for r in rows] + [r["number"] for r in headline_rows(verdict)]
    assert not [w for w in labels if "_" in w]  # no variable names such as n_lost or decodable_never
    assert rows[0]["share [95% interval]"].endswith("of 200 facts") and "[" in rows[0]["share [95% interval]"]
    assert [r["what"].split(" — ")[0] for r in rows[1:4]] == ["Floor", "Floor", "Ceiling"]
    assert all(r["lost facts minus this"].endswith("points") for r in rows[1:4])
    decision = {r["number"]: r["value"] for r in headline_rows(verdict)}["Decision"]
    assert decision == "partly displaced"
    assert patching_rows(verdict) == []  # no patching in this verdict
    assert regime_rows([{"variant": "lora", "metric": "prompt_mass", "mean": 0.5, "lo": 0.4, "hi": 0.6, "n": 9}]) == [
        {"recovery": "lora", "what": "attention on its prompt (last token, mean over layers and heads)",
         "value [95% interval]": "50% [40, 60] of 9 facts"}]


def test_the_decision_figure_shows_the_share_and_each_baseline():
    verdict = _verdict()
    fig = decision_figure(verdict)
    (trace,) = fig.data
    assert trace.y[0] == "lost facts: still decodable" and len(trace.y) == 4
    assert "partly displaced" in fig.layout.title.text
    assert decision_figure({"decodable_lost": {"mean": None}}) is None
