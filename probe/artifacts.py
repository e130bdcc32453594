"""Generic artifact helpers: spec hashes, manifests, the damage-checked JSON reader, atomic writes.

Where each artifact lives is :mod:`probe.store`'s business (``ArtifactStore``); this module knows no
layout and writes no artifact folder (the store's ``handle.writer()`` does: a temporary sibling renamed
into place when complete, under the artifact's lock).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from probe.errors import ProbeError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
_TRACKED_PACKAGES = (
    "probe", "torch", "transformers", "transformer-lens", "llmcompressor",
    "compressed-tensors", "peft", "numpy",
)


def artifacts_root() -> Path:
    """Root of all outputs: ``$PROBE_ARTIFACTS`` or ``./artifacts``."""
    return Path(os.environ.get("PROBE_ARTIFACTS", "artifacts")).resolve()


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine an artifact's content."""
    out = {}
    for name in _TRACKED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def spec_hash(spec: Any, length: int = 12) -> str:
    """Stable short hash of a spec (dataclass or JSON-able value)."""
    text = json.dumps(_jsonable(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_hash(path: Path, length: int = 16) -> str:
    """sha256 of a file's bytes, shortened."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def build_manifest(kind: str, spec: Any, parents: dict[str, str] | None = None, **extra: Any) -> dict:
    """A manifest dict: schema, kind, spec and its hash, parents, versions, time, status."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "spec": _jsonable(spec),
        "spec_hash": spec_hash(spec),
        "parents": parents or {},
        "versions": package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "complete",
        **_jsonable(extra),
    }


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def damaged(what: str, why: str, command: str) -> ProbeError:
    """The one error for an artifact that exists but cannot be read back."""
    why = " ".join(why.split())[:300]
    return ProbeError(f"{what} is damaged ({why}): rebuild it with {command}")


def read_json_checked(path: Path, what: str, command: str) -> Any:
    """The JSON in ``path``, None when absent; unreadable or malformed JSON is a :func:`damaged` error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise damaged(what, f"{path.name} cannot be read: {exc}", command) from None
    if not text.strip():
        raise damaged(what, f"{path.name} is empty", command)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise damaged(what, f"{path.name} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                      command) from None


def check_manifest(data: Any, what: str, command: str, name: str = MANIFEST) -> dict:
    """``data`` if it is a manifest (an object with a status, and a spec hash once complete), else damaged."""
    if not isinstance(data, dict):
        raise damaged(what, f"{name} is not a JSON object", command)
    if not isinstance(data.get("status"), str):
        raise damaged(what, f"{name} has no status", command)
    if data["status"] == "complete" and not isinstance(data.get("spec_hash"), str):
        raise damaged(what, f"{name} has no spec hash", command)
    return data
