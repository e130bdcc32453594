"""The capture store: zarr arrays chunked by probe, a probe table, a manifest, per-batch markers.

Where a capture lives is the artifact store's business (:class:`probe.store.CaptureArtifact`); its
folder holds::

    manifest.json     status "running" until every batch is written, then "complete"
    probes.json       the probe table (one row per probe, in array order)
    arrays/           zarr v3 group; array names are "<position>/<hook name>" (see recorder)
    done/<batch>      written (atomically) after that batch's arrays, so a restart skips it

Why this resumes exactly: batch ``i`` always holds probes ``[i*B, (i+1)*B)`` and the chunk
length along the probe axis is ``B``, so a batch owns whole chunks. A batch killed half-way has
no marker and is recomputed, rewriting its chunks; torchrun ranks own disjoint batches, hence
disjoint chunk files, and never race. The store is created in the handle's temporary folder and
renamed into place (under the capture's lock), so a kill during creation leaves nothing that looks
like a store. Reads go through the handle: a corrupt chunk or metadata file is its damaged error.
"""

from __future__ import annotations

import errno
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

from probe.artifacts import write_json_atomic
from probe.capture.arrays import ArraySpec
from probe.errors import ProbeError
from probe.store import ArtifactStore, CaptureArtifact

MANIFEST = "manifest.json"
PROBES = "probes.json"
ARRAYS = "arrays"
DONE = "done"
COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
READ_ERRORS = (RuntimeError,)  # what zarr and blosc raise on a corrupt chunk, besides OSError/ValueError


def estimate_bytes(arrays: dict[str, ArraySpec]) -> int:
    """Uncompressed size of every array (an upper bound on the store's size)."""
    return sum(a.nbytes for a in arrays.values())


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def capture_artifact(run: CaptureArtifact | str | Path) -> CaptureArtifact:
    """The handle itself, or the handle of a capture folder ``<root>/captures/<model>/<run>``."""
    if isinstance(run, CaptureArtifact):
        return run
    path = Path(run).resolve()
    if path.parent.parent.name != "captures":
        raise ProbeError(f"{path} is not a capture folder (captures/<model>/<run>): `probe runs` lists captures")
    return ArtifactStore(path.parents[2]).capture(path.parent.name, path.name)


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


def read_status(handle: CaptureArtifact) -> dict | None:
    """The manifest of a store in any state, None when there is none; a damaged one is its damaged error."""
    return handle.status()


@dataclass
class CaptureStore:
    """A store open for writing batches."""

    handle: CaptureArtifact
    batch_size: int

    @property
    def path(self) -> Path:
        return self.handle.path

    @classmethod
    def create(cls, handle: CaptureArtifact, arrays: dict[str, ArraySpec], batch_size: int, manifest: dict,
               probe_table: list[dict]) -> CaptureStore:
        """Create every (empty) array and the running manifest in the handle's temporary folder, then rename
        it into place, replacing any earlier store of the run. The caller holds ``handle.lock()``."""
        tmp = handle.temp_path()
        with disk_errors(handle.path):
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            try:
                group = zarr.open_group(tmp / ARRAYS, mode="w", zarr_format=3)
                for name, spec in arrays.items():
                    chunks = (min(batch_size, spec.shape[0]), *spec.shape[1:])
                    group.create_array(name, shape=spec.shape, dtype=spec.dtype, chunks=chunks,
                                       compressors=COMPRESSOR, fill_value=spec.fill)
                (tmp / DONE).mkdir()
                write_json_atomic(tmp / PROBES, probe_table)
                write_json_atomic(tmp / MANIFEST, {**manifest, "status": "running"})
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            handle.publish(tmp, overwrite=True)
        return cls(handle, batch_size)

    def done(self) -> set[int]:
        return {int(p.name) for p in (self.path / DONE).iterdir() if p.name.isdigit()}

    def write_batch(self, index: int, rows: dict[str, np.ndarray]) -> None:
        """Write batch ``index``'s rows into every array, then its done-marker."""
        with self.handle.reading(*READ_ERRORS):
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
            write_json_atomic(self.handle.manifest_file, {**manifest, "status": "complete",
                                                          "size_bytes": folder_bytes(self.path)})


@dataclass(frozen=True)
class StoredArray:
    """One zarr array of a capture: slicing it reads through the handle (a corrupt chunk → damaged error);
    every other attribute (``shape``, ``dtype``, ``nbytes``, ``async_array`` …) is the zarr array's."""

    array: zarr.Array
    handle: CaptureArtifact

    def __getitem__(self, key: Any) -> np.ndarray:
        with self.handle.reading(*READ_ERRORS):
            return self.array[key]

    def __len__(self) -> int:
        return self.array.shape[0]

    def __getattr__(self, name: str) -> Any:
        if name in ("array", "handle"):  # not yet set (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.array, name)


@dataclass
class CaptureRun:
    """A store opened for reading: arrays are zarr arrays, read lazily by slice."""

    handle: CaptureArtifact
    manifest: dict
    group: Any

    @property
    def path(self) -> Path:
        return self.handle.path

    def __getitem__(self, name: str) -> StoredArray:
        with self.handle.reading(*READ_ERRORS):
            try:
                return StoredArray(self.group[name], self.handle)
            except KeyError:
                pass
        raise ProbeError(f"{self.path} has no array {name!r}: it has {', '.join(self.names()[:8])} …")

    def names(self) -> list[str]:
        """Every array's name ("<position>/<hook name>", "tokens", "logits/topk_ids", …)."""
        out: list[str] = []

        def walk(group: Any, prefix: str) -> None:
            for key, member in sorted(group.members()):
                if isinstance(member, zarr.Group):
                    walk(member, f"{prefix}{key}/")
                else:
                    out.append(prefix + key)

        with self.handle.reading(*READ_ERRORS):
            walk(self.group, "")
        return out

    @property
    def probes(self) -> list[dict]:
        return self.handle.probes()


def open_run(run: CaptureArtifact | str | Path) -> CaptureRun:
    """Open a capture (a store handle or its folder) for lazy reads: ``run["last/blocks.3.hook_resid_post"][10:20]``."""
    handle = capture_artifact(run)
    manifest = handle.status()
    if manifest is None:
        raise ProbeError(f"{handle.path} is not a capture (no manifest.json): run `probe capture` first (`probe runs` "
                         f"lists captures)")
    with handle.reading(*READ_ERRORS):
        group = zarr.open_group(handle.arrays, mode="r")
    return CaptureRun(handle, manifest, group)


def list_runs(store: ArtifactStore | None = None) -> list[dict]:
    """The `probe runs` rows of every capture (model, run, variant, status, batches, size); a damaged one is
    left out with a warning."""
    return [c.summary() for c in (store or ArtifactStore.default()).captures()]
