"""`probe analyze` end to end on tiny-llama captures: self-comparison, logit lens, refusals, CLI.

The compressed variant here is the tiny model with 3-bit round-to-nearest weights written
directly as a variant folder (llmcompressor takes minutes on these CPUs; the compression stage
has its own tests), so the analysis sees a genuinely different model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from probe.analysis.captures import find_runs
from probe.analysis.lens import Lens, answer_rank_prob
from probe.analysis.run import analyze
from probe.analysis.spec import AnalyzeSpec
from probe.artifacts import build_manifest, write_json_atomic
from probe.capture.run import capture
from probe.capture.store import open_run
from probe.cli import app
from probe.errors import ProbeError
from probe.models.tiny import build_tiny_llama
from tests.unit.test_capture_helpers import FACTS, build_capture_cfg

RUN = "original-capitals-all"


def _probes(folder: Path) -> Path:
    path = folder / "capitals.jsonl"
    rows = [{"id": f"cap:{s}", "subject": s, "prompt": p, "answer": a, "relation": "capital",
             "split": "train" if i % 3 == 0 else "eval"} for i, (s, p, a) in enumerate(FACTS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(probes: Path, **kw):
    return build_capture_cfg(probes, split="all", positions=("last",), full_attention=0, **kw)


@pytest.fixture(scope="module")
def original_capture(tmp_path_factory) -> Path:
    """One tiny-llama original capture of 12 facts (8 eval, 4 train), shared read-only by the tests."""
    root = tmp_path_factory.mktemp("analysis")
    mp = pytest.MonkeyPatch()
    mp.setenv("PROBE_ARTIFACTS", str(root / "artifacts"))
    try:
        return capture(_cfg(_probes(root)))
    finally:
        mp.undo()


def _copy_as(source: Path, target: Path, **manifest_changes: object) -> Path:
    """A copy of a capture whose manifest says something else (variant, split, probe set …)."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    write_json_atomic(target / "manifest.json", {**manifest, **manifest_changes})
    return target


def _twin(artifacts: Path, original: Path) -> Path:
    """The original capture plus a copy of it labelled as the rtn3-compressed capture."""
    folder = artifacts / "captures" / "tiny-llama"
    shutil.copytree(original, folder / RUN)
    return _copy_as(original, folder / "rtn3-compressed-capitals-all", variant="compressed", compression="rtn3")


def _spec(**kw) -> AnalyzeSpec:
    return AnalyzeSpec(**{"model": "tiny-llama", "compression": "rtn3", "min_facts": 4, "n_boot": 200,
                          "n_boot_cka": 20, **kw})


def _rows(path: Path, table: str) -> list[dict]:
    return json.loads((path / f"{table}.json").read_text())


def test_a_run_against_itself_has_zero_divergence_and_cka_one(artifacts, original_capture):
    _twin(artifacts, original_capture)
    result = analyze(_spec())
    div = _rows(result.path, "divergence")
    assert {r["metric"] for r in div} >= {"lens_kl", "lens_js", "resid_cosine_distance", "resid_relative_l2",
                                          "attention_js", "mlp_out_relative_l2", "attn_out_relative_l2"}
    assert all(abs(r["mean"]) < 1e-6 and abs(r["hi"]) < 1e-6 for r in div)
    assert all(abs(r["mean"] - 1) < 1e-9 and abs(r["lo"] - 1) < 1e-9 for r in _rows(result.path, "cka"))
    cross = {(r["layer"], r["original_layer"]): r["cka"] for r in _rows(result.path, "cross_cka")}
    assert all(abs(cross[(la, la)] - 1) < 1e-9 for la in range(4))
    dec = {(r["variant"], r["probe"], r["layer"]): r["mean"] for r in _rows(result.path, "decodability")}
    assert all(dec[("compressed", "transfer", la)] == dec[("compressed", "own", la)] for la in range(4))
    verdict = json.loads((result.path / "verdict.json").read_text())
    assert verdict["n_eval"] == 8 and verdict["n_lost"] == 0 and "train-split" in verdict["decodability"]
    assert verdict["patching"]["note"].startswith("activation patching was not asked for")
    assert analyze(_spec(patching=True, force=True)).path == result.path
    assert json.loads((result.path / "verdict.json").read_text())["patching"]["note"].startswith(
        "activation patching skipped: the compressed model is not built")
    assert (result.path / "verdict.md").read_text().strip().endswith("nothing to call displaced or forgotten.")
    for name in ("divergence_lens_js", "cka_cka", "cross_cka_compressed", "decodability_own"):
        assert (result.path / "figures" / f"{name}.json").is_file()
        assert (result.path / "figures" / f"{name}.html").is_file()
    assert (result.path / "figures" / "plotly.min.js").is_file()
    with pytest.raises(ProbeError, match="exists: use --force"):
        analyze(_spec())


def _mutate(kind: str, artifacts: Path, original: Path) -> None:
    twin = _twin(artifacts, original)
    manifest = json.loads((twin / "manifest.json").read_text())
    if kind == "probe set":
        write_json_atomic(twin / "manifest.json", {**manifest, "probe_hash": "0123456789abcdef"})
    elif kind == "tokens":
        zarr.open_group(twin / "arrays", mode="r+")["tokens"][3, 1] = 77
    elif kind == "nan":
        zarr.open_group(twin / "arrays", mode="r+")["last/blocks.2.hook_resid_post"][5, 0] = np.nan
    elif kind == "no original":
        shutil.rmtree(artifacts / "captures" / "tiny-llama" / RUN)
    elif kind == "two compressed":
        shutil.copytree(twin, twin.with_name("other"))


@pytest.mark.parametrize(("kind", "spec_kw", "message"), [
    ("probe set", {}, r"different probe sets: .* capture every variant with the same --probes"),
    ("tokens", {}, r"tokenise the probes differently .*first at probe 3"),
    ("nan", {}, r"NaN/inf in compressed capture .*last/blocks\.2\.hook_resid_post"),
    ("none", {"min_facts": 50}, r"the eval split has 8, at least 50 are needed"),
    ("no original", {}, r"no complete original capture .*probe capture --model tiny-llama --variant original"),
    ("two compressed", {}, r"several captures of variant 'compressed'.*--runs"),
])
def test_bad_input_is_refused_with_the_reason(artifacts, original_capture, kind, spec_kw, message):
    _mutate(kind, artifacts, original_capture)
    with pytest.raises(ProbeError, match=message):
        analyze(_spec(**spec_kw))
    assert not (artifacts / "analysis").exists() or not list((artifacts / "analysis").iterdir())


def test_discovery_prefers_a_capture_of_all_splits_over_an_eval_only_one(artifacts, original_capture):
    twin = _twin(artifacts, original_capture)
    _copy_as(twin, twin.with_name("rtn3-compressed-capitals-eval"), split="eval")
    assert find_runs(_spec())["compressed"].path == twin


def test_discovery_ignores_a_capture_of_another_probe_set(artifacts, original_capture):
    _twin(artifacts, original_capture)
    _copy_as(original_capture, artifacts / "captures" / "tiny-llama" / "original-quick-look",
             probe_hash="0123456789abcdef")
    assert find_runs(_spec())["original"].path.name == RUN


def _rtn3_variant(artifacts: Path) -> None:
    """A 3-bit round-to-nearest (per output row) tiny-llama saved as the ``rtn3`` variant folder."""
    model, tok = build_tiny_llama()
    with torch.no_grad():
        for module in model.model.layers.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                scale = w.abs().amax(1, keepdim=True) / 3
                w.copy_((w / scale).round().clamp(-4, 3) * scale)
    folder = artifacts / "variants" / "tiny-llama" / "rtn3"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    write_json_atomic(folder / "manifest.json", build_manifest("compress", {"method": "rtn", "bits": 3},
                                                               parents={"model": "tiny"}))


def test_cli_analyzes_a_compressed_capture_and_the_lens_reproduces_captured_ranks(artifacts, original_capture):
    shutil.copytree(original_capture, artifacts / "captures" / "tiny-llama" / RUN)
    _rtn3_variant(artifacts)
    compressed = capture(_cfg(original_capture.parents[3] / "capitals.jsonl", variant="compressed",
                              compression="rtn3"))
    model, tok = build_tiny_llama()
    lens = Lens.from_model(model)
    for path in (original_capture, compressed):
        run = open_run(path)
        answers = [[tok(" " + p["object"], add_special_tokens=False).input_ids[0]] for p in run.probes]
        rank, _ = answer_rank_prob(lens.logprobs(run["last/blocks.3.hook_resid_post"][:]), answers)
        np.testing.assert_array_equal(rank, run["logits/answer_rank"][:])
    result = CliRunner().invoke(app, ["analyze", "--model", "tiny-llama", "--compression", "rtn3", "--min-facts",
                                      "4", "--n-boot", "200", "--n-boot-cka", "20"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Analysis tiny-llama-rtn3" in result.output and "compressed" in result.output
    path = artifacts / "analysis" / "tiny-llama-rtn3"
    div = [r for r in _rows(path, "divergence") if r["metric"] == "resid_relative_l2"]
    assert all(r["lo"] > 0 for r in div) and div[-1]["mean"] > div[0]["mean"]  # the error grows with depth
    cka = [r["mean"] for r in _rows(path, "cka")]
    assert all(0 < c < 1 for c in cka)


def _set_known(path, known: np.ndarray) -> None:
    """Edit a capture's known flags: the probe table's ``known`` (the protocol's definition, what the analysis
    reads) and the first-token array of captures made before the table carried it."""
    zarr.open_group(path / "arrays", mode="r+")["logits/answer_top1"][:] = known
    rows = json.loads((path / "probes.json").read_text())
    for row, k in zip(rows, known, strict=True):
        row["known"] = bool(k)
    (path / "probes.json").write_text(json.dumps(rows))


def test_lost_facts_and_a_recovery_reach_the_verdict(artifacts, original_capture):
    """Top-1 flags edited so the original knows every fact, compression loses all, a 'prompt' copy regains half."""
    twin = _twin(artifacts, original_capture)
    prompt = _copy_as(twin, twin.with_name("rtn3-prompt-capitals-all"), variant="prompt")
    for path, top1 in ((artifacts / "captures" / "tiny-llama" / RUN, np.ones(12, bool)), (twin, np.zeros(12, bool)),
                       (prompt, np.arange(12) % 2 == 0)):
        _set_known(path, top1)
    _rtn3_variant(artifacts)  # built: patching runs on the models themselves
    result = analyze(_spec(patching=True))
    verdict = json.loads((result.path / "verdict.json").read_text())
    assert verdict["n_lost"] == 8 and verdict["known_original"]["mean"] == 1.0
    patching = verdict["patching"]  # the random tiny model knows none of them in this run, so none count
    assert patching["facts_patched"] == 8 and patching["sanity"]["original_misses_unpatched"] == 8
    assert patching["seconds_per_fact_layer"] > 0 and patching["forward_passes_per_fact"] == 2 * 4 * 2 + 2
    assert {r["variant"] for r in verdict["graded"]["ranks"]} == {"original", "compressed"}
    assert {r["facts"] for r in verdict["graded"]["replacements"]} == {"lost facts: the compressed model's output"}
    assert verdict["decision"] in ("displaced", "partly displaced", "forgotten", "undecided")
    assert [f["baseline"] for f in verdict["baselines"]["floors"]] == ["label-shuffled probe on the lost facts"]
    assert 0 <= verdict["decodable_lost"]["mean"] <= 1 and verdict["decodable_lost"]["n"] == 8
    regimes = {r["metric"]: r for r in _rows(result.path, "regimes") if r["variant"] == "prompt"}
    assert regimes["regained"]["n"] == 8 and 0 < regimes["regained"]["mean"] < 1
    assert abs(regimes["delta_cka"]["mean"]) < 1e-9 and regimes["prompt_mass"]["mean"] == 0
    assert regimes["mlp_change"]["mean"] == 0 and regimes["attn_out_change"]["n"] == 8
    assert "Of the 8 facts compression loses" in result.verdict and "prompt regains" in result.verdict
    summary = {r["variant"]: r for r in result.summary}  # the models' own outputs, not the lens at the last layer
    assert summary["original"]["top1"] == "100% [100, 100]" and summary["compressed"]["top1"] == "0% [0, 0]"
    assert summary["original"]["mean_cka"] == "—" and summary["prompt"]["mean_cka"] == "1.000"
    assert json.loads((result.path / "manifest.json").read_text())["distractors"].startswith("the probe file ")


@pytest.mark.parametrize("damage", ["manifest", "arrays"])
def test_a_damaged_capture_of_another_run_is_skipped_with_a_warning(artifacts, original_capture, capsys, damage):
    twin = _twin(artifacts, original_capture)
    broken = twin.with_name("rtn3-compressed-broken")
    shutil.copytree(twin, broken)
    if damage == "manifest":
        (broken / "manifest.json").write_text((broken / "manifest.json").read_text()[:30])
    else:
        (broken / "arrays" / "zarr.json").write_text("{")
    runs = find_runs(_spec())
    assert runs["compressed"].path == twin
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: skipped: capture tiny-llama/rtn3-compressed-broken is damaged" in err
