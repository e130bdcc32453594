"""Manifests, spec hashes and atomic JSON writes."""

from __future__ import annotations

import json

import pytest

from probe.artifacts import build_manifest, read_manifest, spec_hash, write_json_atomic
from probe.config import ModelSpec
from probe.errors import ProbeError


def test_manifest_roundtrip_and_status(tmp_path):
    spec = ModelSpec("tiny-llama")
    m = build_manifest("model", spec, parents={"x": "y"})
    assert m["spec_hash"] == spec_hash(spec) and m["spec"]["name"] == "tiny-llama"
    assert "torch" in m["versions"]
    write_json_atomic(tmp_path / "manifest.json", m)
    assert read_manifest(tmp_path)["parents"] == {"x": "y"}
    write_json_atomic(tmp_path / "manifest.json", {**m, "status": "running"})
    assert read_manifest(tmp_path) is None
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "running"


def test_spec_hash_changes_with_spec():
    assert spec_hash(ModelSpec("a")) != spec_hash(ModelSpec("b"))
    assert spec_hash(ModelSpec("a")) == spec_hash(ModelSpec("a"))


def test_a_damaged_manifest_is_one_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text('{"status": "complete", "spec')
    with pytest.raises(ProbeError, match=r"is damaged \(manifest.json is not valid JSON: .*\): rebuild it with the "
                                         r"command that made it, with --force$"):
        read_manifest(tmp_path)
    assert read_manifest(tmp_path / "absent") is None
