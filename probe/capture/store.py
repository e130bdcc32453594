"""The capture store: zarr arrays chunked by probe, a probe table, a manifest, per-batch markers.

Layout of ``artifacts/captures/<model>/<run>/``::

    manifest.json     status "running" until every batch is written, then "complete"
    probes.json       the probe table (one row per probe, in array order)
    arrays/           zarr v3 group; array names are "<position>/<hook name>" (see recorder)
    done/<batch>      written (atomically) after that batch's arrays, so a restart skips it

Why this resumes exactly: batch ``i`` always holds probes ``[i*B, (i+1)*B)`` and the chunk
length along the probe axis is ``B``, so a batch owns whole chunks. A batch killed half-way has
no marker and is recomputed, rewriting its chunks; torchrun ranks own disjoint batches, hence
disjoint chunk files, and never race. The store is created in a temporary folder and renamed
into place, so a kill during creation leaves nothing that looks like a store.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from probe.artifacts import artifacts_root, write_json_atomic
from probe.capture.arrays import ArraySpec
from probe.errors import ProbeError

MANIFEST = "manifest.json"
PROBES = "probes.json"
ARRAYS = "arrays"
DONE = "done"
COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def captures_root() -> Path:
    return artifacts_root() / "captures"


def estimate_bytes(arrays: dict[str, ArraySpec]) -> int:
    """Uncompressed size of every array (an upper bound on the store's size)."""
    return sum(a.nbytes for a in arrays.values())


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """A full disk becomes one clean line; the store stays resumable (the batch has no marker)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ProbeError(f"disk full while writing {path}: free space, then rerun the same command "
                             f"to resume (finished batches are kept)") from None
        raise


def read_status(path: Path) -> dict | None:
    """The manifest of a store in any state, or None when there is none."""
    file = path / MANIFEST
    return json.loads(file.read_text()) if file.is_file() else None


@dataclass
class CaptureStore:
    """A store open for writing batches."""

    path: Path
    batch_size: int

    @classmethod
    def create(cls, path: Path, arrays: dict[str, ArraySpec], batch_size: int, manifest: dict,
               probe_table: list[dict]) -> CaptureStore:
        """Create every (empty) array and the running manifest, then rename into place."""
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        with disk_errors(path):
            group = zarr.open_group(tmp / ARRAYS, mode="w", zarr_format=3)
            for name, spec in arrays.items():
                chunks = (min(batch_size, spec.shape[0]), *spec.shape[1:])
                group.create_array(name, shape=spec.shape, dtype=spec.dtype, chunks=chunks,
                                   compressors=COMPRESSOR, fill_value=spec.fill)
            (tmp / DONE).mkdir()
            write_json_atomic(tmp / PROBES, probe_table)
            write_json_atomic(tmp / MANIFEST, {**manifest, "status": "running"})
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        return cls(path, batch_size)

    def done(self) -> set[int]:
        return {int(p.name) for p in (self.path / DONE).iterdir() if p.name.isdigit()}

    def write_batch(self, index: int, rows: dict[str, np.ndarray]) -> None:
        """Write batch ``index``'s rows into every array, then its done-marker."""
        group = zarr.open_group(self.path / ARRAYS, mode="r+")
        start = index * self.batch_size
        with disk_errors(self.path):
            for name, value in rows.items():
                group[name][start: start + len(value)] = value
            marker = self.path / DONE / f"{index:06d}"
            tmp = marker.with_name(f".{marker.name}.tmp-{os.getpid()}")
            tmp.write_text("")
            os.replace(tmp, marker)

    def finalise(self, manifest: dict, probe_table: list[dict]) -> None:
        with disk_errors(self.path):
            write_json_atomic(self.path / PROBES, probe_table)
            write_json_atomic(self.path / MANIFEST, {**manifest, "status": "complete",
                                                     "size_bytes": folder_bytes(self.path)})


@dataclass
class CaptureRun:
    """A store opened for reading: arrays are zarr arrays, read lazily by slice."""

    path: Path
    manifest: dict
    group: Any

    def __getitem__(self, name: str) -> zarr.Array:
        try:
            return self.group[name]
        except KeyError:
            raise ProbeError(f"{self.path} has no array {name!r}: it has {', '.join(self.names()[:8])} …") from None

    def names(self) -> list[str]:
        """Every array's name ("<position>/<hook name>", "tokens", "logits/topk_ids", …)."""
        out: list[str] = []

        def walk(group: Any, prefix: str) -> None:
            for key, member in sorted(group.members()):
                if isinstance(member, zarr.Group):
                    walk(member, f"{prefix}{key}/")
                else:
                    out.append(prefix + key)

        walk(self.group, "")
        return out

    @property
    def probes(self) -> list[dict]:
        return json.loads((self.path / PROBES).read_text())


def open_run(path: str | Path) -> CaptureRun:
    """Open a capture for lazy reads (``run["last/blocks.3.hook_resid_post"][10:20]``)."""
    path = Path(path)
    manifest = read_status(path)
    if manifest is None:
        raise ProbeError(f"{path} is not a capture (no manifest.json): run `probe capture` first (`probe runs` "
                         f"lists captures)")
    return CaptureRun(path, manifest, zarr.open_group(path / ARRAYS, mode="r"))


def list_runs(root: Path | None = None) -> list[dict]:
    """Every capture under ``artifacts/captures``: model, run, variant, status, batches, size."""
    root = root or captures_root()
    rows = []
    for manifest_file in sorted(root.glob(f"*/*/{MANIFEST}")):
        path = manifest_file.parent
        m = json.loads(manifest_file.read_text())
        done = len(list((path / DONE).glob("[0-9]*"))) if (path / DONE).is_dir() else 0
        rows.append({"model": path.parent.name, "run": path.name, "variant": m.get("variant"),
                     "compression": m.get("compression"), "status": m.get("status"),
                     "batches": f"{done}/{m.get('n_batches', '?')}", "n_probes": m.get("n_probes"),
                     "size_bytes": m.get("size_bytes") or folder_bytes(path), "path": str(path)})
    return rows
