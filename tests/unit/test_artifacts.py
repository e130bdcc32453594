"""Manifests, spec hashes and atomic JSON writes."""

from __future__ import annotations

import json

import pytest

from probe.artifacts import build_manifest, spec_hash, write_json_atomic
from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.store import ArtifactStore


def test_manifest_roundtrip_and_status(tmp_path):
    spec = ModelSpec("tiny-llama")
    m = build_manifest("model", spec, parents={"x": "y"})
    assert m["spec_hash"] == spec_hash(spec) and m["spec"]["name"] == "tiny-llama"
    assert "torch" in m["versions"]
    handle = ArtifactStore(tmp_path).analysis("a")
    write_json_atomic(handle.manifest_file, m)
    assert handle.manifest()["parents"] == {"x": "y"}
    write_json_atomic(handle.manifest_file, {**m, "status": "running"})
    assert handle.manifest() is None
    assert json.loads(handle.manifest_file.read_text())["status"] == "running"


def test_spec_hash_changes_with_spec():
    assert spec_hash(ModelSpec("a")) != spec_hash(ModelSpec("b"))
    assert spec_hash(ModelSpec("a")) == spec_hash(ModelSpec("a"))


def test_a_damaged_manifest_is_one_clear_error(tmp_path):
    handle = ArtifactStore(tmp_path).analysis("a")
    handle.path.mkdir(parents=True)
    handle.manifest_file.write_text('{"status": "complete", "spec')
    with pytest.raises(ProbeError, match=r"is damaged \(manifest.json is not valid JSON: .*\): rebuild it with "
                                         r"`probe analyze"):
        handle.manifest()
    assert ArtifactStore(tmp_path).analysis("absent").manifest() is None
