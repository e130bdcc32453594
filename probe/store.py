"""The artifact store: the one place that knows where each artifact lives, reads it back and writes it.

Layout under the root (``$PROBE_ARTIFACTS`` or ``./artifacts``; see ``artifacts/README.md``)::

    models/<model>/                              model         (plain HF folder)
    variants/<model>/<compression>/              variant       (compressed HF folder)
    variants/<model>/<compression>/recover/<m>/  recovery
    eval/<model>/<label>/<probes>-t<template>.json   eval result (label: variant or <compression>-<variant>)
    captures/<model>/<run>/                      capture
    costs/<model>/<compression>.json             cost table
    analysis/<name>/                             analysis
    corpus/<model>/<hash>.jsonl, experiments/<name>.json   caches (plain paths)

A handle (``store.variant("tiny-llama", "rtn3")``) gives the path, the manifest (``None`` while absent
or unfinished; a damaged one is one ``ProbeError`` naming the command that rebuilds it), freshness
(:meth:`Artifact.is_fresh`, the one reuse rule), a lock and an atomic writer. Every name that becomes
a path is checked against :data:`NAME_PATTERN` and the path must resolve inside the root (models and
the corpus cache may be symlinks the owner placed to share them between roots). Listings skip a
damaged artifact with a warning. This module imports neither torch nor transformers (the dashboard
reads through it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from probe.artifacts import MANIFEST, artifacts_root, check_manifest, damaged, read_json_checked, write_json_atomic
from probe.errors import ProbeError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
MAX_NAME = 128
_TEMP = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>\d+)")

Warn = Callable[[str], None]
_HELD: dict[str, int] = {}  # lock files this process holds → nesting depth


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is a safe single path component (:data:`NAME_PATTERN`, at most :data:`MAX_NAME` chars)."""
    if not isinstance(name, str) or len(name) > MAX_NAME or not NAME_PATTERN.fullmatch(name):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 40 else repr(name[:40] + "…")
        raise ProbeError(f"refused {what} {shown}: use letters, digits and . _ + - (starting with a letter or digit, "
                         f"at most {MAX_NAME} characters)")
    return name


def model_key(name: str) -> str:
    """Folder name of a model: its registry name, or the last component of a folder or hub id."""
    return Path(name).name if "/" in name else name


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


@lru_cache(maxsize=512)
def _cached_json(path: str, mtime_ns: int, size: int, what: str, command: str) -> Any:
    return read_json_checked(Path(path), what, command)


def clear_read_cache() -> None:
    """Forget the JSON a ``cached`` store has read (tests and benchmarks measure cold reads)."""
    _cached_json.cache_clear()


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---- handles -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """One artifact: a folder with ``manifest.json``, or (:class:`FileArtifact`) a JSON file embedding one."""

    store: ArtifactStore
    kind: ClassVar[str] = "artifact"

    @property
    def parts(self) -> tuple[str, ...]:
        """Path components under the root (each one a checked name)."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.parts[-1]

    @property
    def path(self) -> Path:
        return self.store.resolve(*self.parts, shared=self.shared)

    shared: ClassVar[bool] = False  # may be a symlink to outside the root (a shared, read-only cache)

    @property
    def what(self) -> str:
        """How messages name it: ``compressed variant tiny-llama/rtn3``."""
        return f"{self.kind} {'/'.join(self.parts[1:])}"

    @property
    def command(self) -> str:
        """The command that rebuilds it (named by the damaged error)."""
        raise NotImplementedError

    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST

    def damaged(self, why: str) -> ProbeError:
        return damaged(self.what, why, self.command)

    def read_json(self, file: Path) -> Any:
        """JSON of a file of this artifact, None if absent; unreadable → the damaged error."""
        return self.store.read_json(file, self.what, self.command)

    def status(self) -> dict | None:
        """The manifest in any state ("running" captures too); None when absent."""
        data = self.read_json(self.manifest_file)
        return None if data is None else check_manifest(data, self.what, self.command)

    def manifest(self) -> dict | None:
        """The manifest of a finished artifact; None when absent or unfinished."""
        m = self.status()
        return m if m is not None and m["status"] == "complete" else None

    def exists(self) -> bool:
        return self.path.exists()

    def is_fresh(self, spec_hash: str, parents: Iterable[Artifact] = ()) -> bool:
        """THE reuse rule: finished, made with ``spec_hash``, and newer than every parent's manifest.

        A parent that is absent or unfinished counts as newer (what was made from it is stale); a damaged
        one is its damaged error.
        """
        m = self.manifest()
        if m is None or m.get("spec_hash") != spec_hash:
            return False
        made = _mtime_ns(self.manifest_file)
        for parent in parents:
            if parent.manifest() is None:
                return False
            if made is None or made <= (_mtime_ns(parent.manifest_file) or 0):
                return False
        return True

    @contextlib.contextmanager
    def reading(self, *errors: type[BaseException]) -> Iterator[None]:
        """Turn a failed read of stored data (arrays, weights) into the damaged error.

        Catches ``OSError``, ``ValueError``, ``EOFError`` and the library errors given in ``errors``.
        """
        try:
            yield
        except ProbeError:
            raise
        except (OSError, ValueError, EOFError, *errors) as exc:
            raise self.damaged(f"{type(exc).__name__}: {exc}") from None

    # ---- writing ---------------------------------------------------------------------------------
    @property
    def lock_file(self) -> Path:
        return self.path.with_name(f".{self.name}.lock")

    def temp_path(self, pid: int | None = None) -> Path:
        """Where a writer builds it before the rename: ``.NAME.tmp-PID`` next to it."""
        return self.path.with_name(f".{self.name}.tmp-{pid or os.getpid()}")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this artifact's write lock (``.NAME.lock`` with the writer's PID).

        A live writer's lock is one error naming its PID; a stale lock (its process is gone) is taken
        over with a message. Temporary folders of dead writers are removed once the lock is held. The
        lock is re-entrant within the process: a stage holds it from its first check to the end, and
        the writer it opens inside takes it again.
        """
        key = str(self.lock_file)
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        created = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._acquire()
        _HELD[key] = 1
        try:
            self._remove_dead_temps()
            yield
        finally:
            del _HELD[key]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_file)
            os.close(fd)
            for folder in created:  # a build that wrote nothing leaves no empty folders behind
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def _acquire(self) -> int:
        for _ in range(10):
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise ProbeError(f"{self.what} is being written by process {holder} (lock {self.lock_file}): wait "
                                 f"for it to finish, or stop that process") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file while we waited for it: take the new one
                os.close(fd)
                continue
            previous = os.read(fd, 32).decode(errors="replace").strip()
            if previous and previous != str(os.getpid()):
                self.store.warn(f"taking over the stale lock of {self.what}: process {previous} that held it is no "
                                f"longer running")
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        raise ProbeError(f"could not lock {self.what} ({self.lock_file}): another process keeps replacing the lock")

    def _remove_dead_temps(self) -> None:
        parent = self.path.parent
        for entry in parent.glob(f".{glob_escape(self.name)}.tmp-*"):
            m = _TEMP.fullmatch(entry.name)
            if m and m["name"] == self.name and not pid_alive(int(m["pid"])):
                _remove(entry)
                self.store.warn(f"removed {entry}, left unfinished by process {m['pid']} that is no longer running")


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped (checked names hold none but ``.``; kept for safety)."""
    return re.sub(r"([*?\[])", r"[\1]", name)


@dataclass(frozen=True)
class FolderArtifact(Artifact):
    """An artifact folder with ``manifest.json``, written to ``.NAME.tmp-PID`` and renamed when complete."""

    @contextlib.contextmanager
    def writer(self, overwrite: bool = False) -> Iterator[Path]:
        """Yield an empty temporary folder that replaces the artifact only if the block completes.

        Holds the lock throughout. An existing artifact (finished, unfinished or damaged) is replaced
        with ``overwrite`` (``--force``), else the block's result is dropped with an error.
        """
        with self.lock():
            tmp = self.temp_path()
            _remove(tmp)
            tmp.mkdir()
            try:
                yield tmp
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self.publish(tmp, overwrite)

    def file(self, name: str) -> Path:
        """A file of the artifact (``report.json``, ``losses.json``, ``verdict.json`` …); a plain name only."""
        return self.path / check_name(name, "file name")

    def publish(self, tmp: Path, overwrite: bool = False) -> None:
        """Rename the finished temporary folder ``tmp`` into place (call it holding :meth:`lock`)."""
        final = self.path
        if final.exists() or final.is_symlink():
            if not overwrite:
                shutil.rmtree(tmp, ignore_errors=True)
                raise ProbeError(f"{self.what} already exists at {final}: rebuild it with {self.command}")
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            _remove(old)
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)

    def check_weights(self) -> None:
        """Refuse truncated or corrupt ``*.safetensors`` files before a loader sees them (damaged error).

        Reads each file's header (8-byte length, JSON tensor table) and checks that the file holds exactly
        the bytes the header describes; no tensor data is read.
        """
        for file in sorted(self.path.rglob("*.safetensors")):
            why = safetensors_problem(file)
            if why is not None:
                raise self.damaged(f"{file.relative_to(self.path)} {why}")


def safetensors_problem(file: Path) -> str | None:
    """Why ``file`` is not a complete safetensors file (header and size), or None when it is."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"is truncated ({size} bytes, no header)"
            n = int.from_bytes(head, "little")
            if n > min(size - 8, 100 << 20):
                return f"is truncated ({size} bytes, its header alone needs {n + 8})"
            header = json.loads(f.read(n))
    except OSError as exc:
        return f"cannot be read: {exc}"
    except (ValueError, UnicodeDecodeError):
        return "has a corrupt header"
    if not isinstance(header, dict):
        return "has a corrupt header"
    try:
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        return "has a corrupt header"
    expected = 8 + n + end
    if size != expected:
        return f"is {'truncated' if size < expected else 'longer than its header says'} ({size} bytes, its header " \
               f"says {expected})"
    return None


@dataclass(frozen=True)
class FileArtifact(Artifact):
    """A JSON file whose ``"manifest"`` key is its manifest (eval results, cost tables)."""

    @property
    def manifest_file(self) -> Path:
        return self.path

    def read(self) -> dict | None:
        """The whole JSON object, None when absent; damaged when unreadable or without a manifest."""
        data = self.read_json(self.path)
        if data is None:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("manifest"), dict):
            raise self.damaged(f"{self.name} has no manifest")
        check_manifest(data["manifest"], self.what, self.command, f"the manifest in {self.name}")
        return data

    def status(self) -> dict | None:
        data = self.read()
        return None if data is None else data["manifest"]

    def write(self, data: Any) -> Path:
        """Write ``data`` atomically under the lock (an existing file is replaced)."""
        with self.lock():
            write_json_atomic(self.path, data)
        return self.path


@dataclass(frozen=True)
class ModelArtifact(FolderArtifact):
    model: str
    kind: ClassVar[str] = "model"
    shared: ClassVar[bool] = True

    @property
    def parts(self) -> tuple[str, ...]:
        return ("models", self.model)

    @property
    def command(self) -> str:
        return f"`rm -r {self.path}` (it is converted again on first use)"


@dataclass(frozen=True)
class VariantArtifact(FolderArtifact):
    model: str
    compression: str
    kind: ClassVar[str] = "compressed variant"

    @property
    def parts(self) -> tuple[str, ...]:
        return ("variants", self.model, self.compression)

    @property
    def command(self) -> str:
        return f"`probe compress --model {self.model} --method {self.compression} --force`"


@dataclass(frozen=True)
class RecoveryArtifact(FolderArtifact):
    model: str
    compression: str
    method: str
    kind: ClassVar[str] = "recovery"

    @property
    def parts(self) -> tuple[str, ...]:
        return ("variants", self.model, self.compression, "recover", self.method)

    @property
    def what(self) -> str:
        return f"recovery {self.model}/{self.compression}/{self.method}"

    @property
    def command(self) -> str:
        return (f"`probe recover --model {self.model} --compression {self.compression} --method {self.method} "
                f"--force`")


@dataclass(frozen=True)
class EvalArtifact(FileArtifact):
    model: str
    label: str
    file: str
    kind: ClassVar[str] = "eval result"

    @property
    def parts(self) -> tuple[str, ...]:
        return ("eval", self.model, self.label, self.file)

    @property
    def command(self) -> str:
        return f"`probe eval --model {self.model}` for the variant {self.label} (with its --probes and --template)"


@dataclass(frozen=True)
class CaptureArtifact(FolderArtifact):
    """``manifest.json``, ``probes.json``, zarr ``arrays/`` and per-batch ``done/`` markers."""

    model: str
    run: str
    kind: ClassVar[str] = "capture"

    @property
    def parts(self) -> tuple[str, ...]:
        return ("captures", self.model, self.run)

    @property
    def command(self) -> str:
        return f"`probe capture --model {self.model} --run {self.run} --force` (with its variant options)"

    @property
    def arrays(self) -> Path:
        return self.path / "arrays"

    @property
    def probes_file(self) -> Path:
        return self.path / "probes.json"

    @property
    def done_dir(self) -> Path:
        return self.path / "done"

    def done_count(self) -> int:
        """How many batches have their done-marker."""
        return len(list(self.done_dir.glob("[0-9]*"))) if self.done_dir.is_dir() else 0

    def probes(self) -> list[dict]:
        data = self.read_json(self.probes_file)
        if not isinstance(data, list):
            raise self.damaged("probes.json is missing" if data is None else "probes.json is not a list")
        return data

    def summary(self) -> dict | None:
        """The `probe runs` row: model, run, variant, compression, status, batches, probes, size; None if absent."""
        m = self.status()
        if m is None:
            return None
        return {"model": self.model, "run": self.run, "variant": m.get("variant"),
                "compression": m.get("compression"), "status": m.get("status"),
                "batches": f"{self.done_count()}/{m.get('n_batches', '?')}", "n_probes": m.get("n_probes"),
                "size_bytes": m.get("size_bytes") or _folder_bytes(self.path), "path": str(self.path)}


@dataclass(frozen=True)
class CostArtifact(FileArtifact):
    model: str
    compression: str
    kind: ClassVar[str] = "cost table"

    @property
    def parts(self) -> tuple[str, ...]:
        return ("costs", self.model, f"{self.compression}.json")

    @property
    def what(self) -> str:
        return f"cost table {self.model}/{self.compression}"

    @property
    def command(self) -> str:
        return f"`probe costs --model {self.model} --compression {self.compression}`"


@dataclass(frozen=True)
class AnalysisArtifact(FolderArtifact):
    """Tables (JSON + CSV), ``figures/<name>.json``, ``verdict.md``/``verdict.json`` and the manifest."""

    analysis: str
    kind: ClassVar[str] = "analysis"

    @property
    def parts(self) -> tuple[str, ...]:
        return ("analysis", self.analysis)

    @property
    def command(self) -> str:
        return f"`probe analyze --name {self.analysis} --force` (with its --model and --compression)"

    def figure_file(self, name: str) -> Path:
        """The plotly JSON of figure ``name``."""
        return self.path / "figures" / f"{check_name(name, 'figure')}.json"


@dataclass(frozen=True)
class LensArtifact(FolderArtifact):
    """A capture's streamed logit-lens statistics (``stats.npz``: per fact and layer), made by `probe analyze`."""

    model: str
    run: str
    kind: ClassVar[str] = "lens statistics"

    @property
    def parts(self) -> tuple[str, ...]:
        return ("lens", self.model, self.run)

    @property
    def command(self) -> str:
        return f"`probe analyze --model {self.model} --force` (it recomputes them)"

    @property
    def stats_file(self) -> Path:
        return self.path / "stats.npz"


# ---- the store -----------------------------------------------------------------------------------
class ArtifactStore:
    """Every artifact under one root. ``cached`` (the dashboard) caches JSON reads by modification time;
    cached values are shared, so treat them as read-only. ``warn`` receives listing and lock messages."""

    def __init__(self, root: Path | str, *, warn: Warn | None = None, cached: bool = False) -> None:
        self.root = Path(root).resolve()
        self.warn: Warn = warn or _print_warning
        self.cached = cached

    @classmethod
    def default(cls, **kw: Any) -> ArtifactStore:
        """The store at ``$PROBE_ARTIFACTS`` or ``./artifacts``."""
        return cls(artifacts_root(), **kw)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    # ---- paths -----------------------------------------------------------------------------------
    def resolve(self, *parts: str, shared: bool = False) -> Path:
        """``root/parts`` after checking each part; with symlinks resolved it must stay inside the root.

        ``shared`` lets the last component be a symlink to outside (a model folder or cache the owner
        linked in to share it); its parents must still resolve inside.
        """
        path = self.root.joinpath(*(check_name(p, "name") for p in parts))
        inside = path.parent if shared else path
        real = inside.resolve()
        if real != self.root and self.root not in real.parents:
            raise ProbeError(f"refused {'/'.join(parts)}: it resolves to {real}, outside the artifacts folder "
                             f"{self.root}")
        return path

    def read_json(self, path: Path, what: str, command: str) -> Any:
        """JSON at ``path`` (cached by modification time in a ``cached`` store); damaged → ProbeError."""
        if not self.cached:
            return read_json_checked(path, what, command)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise damaged(what, f"{path.name} cannot be read: {exc}", command) from None
        return _cached_json(str(path), st.st_mtime_ns, st.st_size, what, command)

    # ---- handles ---------------------------------------------------------------------------------
    def model(self, model: str) -> ModelArtifact:
        return ModelArtifact(self, check_name(model, "model"))

    def variant(self, model: str, compression: str) -> VariantArtifact:
        return VariantArtifact(self, check_name(model, "model"), check_name(compression, "compression label"))

    def recovery(self, model: str, compression: str, method: str) -> RecoveryArtifact:
        return RecoveryArtifact(self, check_name(model, "model"), check_name(compression, "compression label"),
                                check_name(method, "recovery method"))

    def eval(self, model: str, variant: str, compression: str | None, probes: str, template: int | str = 0
             ) -> EvalArtifact:
        """`probe eval`'s result of ``variant`` on probe set ``probes`` (``name:split`` allowed) and template."""
        check_name(variant, "variant")
        label = variant if compression is None else f"{check_name(compression, 'compression label')}-{variant}"
        stem = probes.replace(":", "-") if isinstance(probes, str) else probes
        file = f"{check_name(stem, 'probe set name')}-t{template}.json"
        return EvalArtifact(self, check_name(model, "model"), check_name(label, "variant label"),
                            check_name(file, "file name"))

    def capture(self, model: str, run: str) -> CaptureArtifact:
        return CaptureArtifact(self, check_name(model, "model"), check_name(run, "run name"))

    def cost(self, model: str, compression: str) -> CostArtifact:
        return CostArtifact(self, check_name(model, "model"), check_name(compression, "compression label"))

    def lens(self, model: str, run: str) -> LensArtifact:
        return LensArtifact(self, check_name(model, "model"), check_name(run, "run name"))

    def analysis(self, name: str) -> AnalysisArtifact:
        return AnalysisArtifact(self, check_name(name, "analysis name"))

    def corpus_file(self, model: str, key: str) -> Path:
        """The self-generated text cache ``corpus/<model>/<key>.jsonl`` (``corpus/`` may be a shared link)."""
        folder = self.resolve("corpus", shared=True) / check_name(model, "model")
        return folder / f"{check_name(key, 'corpus key')}.jsonl"

    def experiment_log(self, name: str) -> Path:
        """``experiments/<name>.json``: an experiment's recorded stage times."""
        return self.resolve("experiments", f"{check_name(name, 'experiment name')}.json")

    def experiment_status(self, name: str) -> Path:
        """``experiments/<name>.status.json``: a running experiment's stages and their state (the live Overview)."""
        return self.resolve("experiments", f"{check_name(name, 'experiment name')}.status.json")

    def experiment_statuses(self) -> list[Path]:
        """Every experiment's status file, by name."""
        return [self.experiment_status(f.removesuffix(".status.json"))
                for f in self._names("experiments", files=".status.json")]

    # ---- listings --------------------------------------------------------------------------------
    def _names(self, *parts: str, files: str | None = None) -> list[str]:
        """Checked names of the folders (or files ending in ``files``) under ``root/parts``, sorted."""
        try:
            folder = self.resolve(*parts) if parts else self.root
        except ProbeError as exc:
            self.warn(f"skipped {'/'.join(parts)}: {exc}")
            return []
        if not folder.is_dir():
            return []
        out = []
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue  # temporary folders, locks
            if (entry.is_file() and files is not None and entry.name.endswith(files)) or (
                    files is None and entry.is_dir()):
                if len(entry.name) > MAX_NAME or not NAME_PATTERN.fullmatch(entry.name):
                    self.warn(f"skipped {entry}: not a valid artifact name")
                    continue
                out.append(entry.name)
        return out

    def _present(self, make: Callable[[], Artifact]) -> Artifact | None:
        """The handle when its manifest can be read (any status); damaged or escaping → a warning and None."""
        try:
            handle = make()
            return handle if handle.status() is not None else None
        except ProbeError as exc:
            self.warn(f"skipped: {exc}")
            return None

    def _listing(self, makers: Iterable[Callable[[], Artifact]]) -> list:
        return [h for h in (self._present(m) for m in makers) if h is not None]

    def _models(self, kind: str, model: str | None) -> list[str]:
        return [check_name(model, "model")] if model is not None else self._names(kind)

    def variants(self, model: str | None = None) -> list[VariantArtifact]:
        return self._listing(lambda m=m, c=c: self.variant(m, c)
                             for m in self._models("variants", model) for c in self._names("variants", m))

    def recoveries(self, model: str | None = None, compression: str | None = None) -> list[RecoveryArtifact]:
        return self._listing(lambda m=m, c=c, r=r: self.recovery(m, c, r)
                             for m in self._models("variants", model)
                             for c in ([compression] if compression else self._names("variants", m))
                             for r in self._names("variants", m, c, "recover"))

    def evals(self, model: str | None = None) -> list[EvalArtifact]:
        return self._listing(lambda m=m, la=la, f=f: EvalArtifact(self, m, la, f)
                             for m in self._models("eval", model) for la in self._names("eval", m)
                             for f in self._names("eval", m, la, files=".json"))

    def captures(self, model: str | None = None) -> list[CaptureArtifact]:
        """Every capture with a readable manifest, finished or not."""
        return self._listing(lambda m=m, r=r: self.capture(m, r)
                             for m in self._models("captures", model) for r in self._names("captures", m))

    def costs(self, model: str | None = None) -> list[CostArtifact]:
        return self._listing(lambda m=m, f=f: self.cost(m, f.removesuffix(".json"))
                             for m in self._models("costs", model) for f in self._names("costs", m, files=".json"))

    def analyses(self) -> list[AnalysisArtifact]:
        return self._listing(lambda a=a: self.analysis(a) for a in self._names("analysis"))
