"""The output folder of ``maskbench synth``: its lock, its record of finished work, its manifest check, and
the tables written at the end of a run.

Finished work lives in the split tables (``{split}/metadata.jsonl``), ``skipped.csv`` and one progress
log per shard (``.progress/shard-*.jsonl``, one JSON line per source item), so an interrupted run
resumes where it stopped; every table is written atomically under an exclusive lock (``.lock``), so the
shards of a job array can finish into one folder.

A run also holds its shard's run lock (``.progress/shard-*.lock``, see :class:`ShardLock`) from set-up to
the end: a second run of the same shard, or a run of another job (other settings, shard count, split or
limit) while any shard is running, is refused at once with :class:`OutputFolderBusyError`; the shards of
one job run side by side.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..core.errors import MaskbenchError
from ..core.io import atomic_write_json, atomic_write_text
from .card import write_card
from .format import MANIFEST_FILE, METADATA_FILE, SKIPPED_FILE, SPLITS, write_metadata

__all__ = ["DatasetMismatchError", "OutputFolderBusyError", "OutputFolderError", "PROGRESS_DIR", "SKIPPED_FILE",
           "MANIFEST_FILE", "ShardLock"]

PROGRESS_DIR = ".progress"


class DatasetMismatchError(MaskbenchError, ValueError):
    """The output folder already holds a dataset made with other settings."""


def read_log(path: Path) -> list[dict[str, Any]]:
    entries = []
    if path.is_file():
        for line in path.read_text("utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # the last line of a killed run may be cut short
                continue
    return entries


def load_state(out: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Finished work in ``out``: (records by id, skip entries by source_id), from tables and logs."""
    records: dict[str, dict] = {}
    skips: dict[str, dict] = {}
    for split in SPLITS:
        meta = out / split / METADATA_FILE
        if meta.is_file():
            for line in meta.read_text("utf-8").splitlines():
                if line.strip():
                    r = json.loads(line)
                    records[r["id"]] = r
    sk = out / SKIPPED_FILE
    if sk.is_file():
        with open(sk, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                skips[row["source_id"]] = {"source_id": row["source_id"], "path": row["path"], "skipped": row["reason"]}
    for log in sorted((out / PROGRESS_DIR).glob("*.jsonl")) if (out / PROGRESS_DIR).is_dir() else []:
        for e in read_log(log):
            if "skipped" in e:
                skips[e["source_id"]] = e
            else:
                for r in e["records"]:
                    records[r["id"]] = r
                skips.pop(e["source_id"], None)
    return records, skips


class OutputFolderError(MaskbenchError, ValueError):
    """The output folder cannot be created (a part of the path is a file, no permission)."""


def _make_out(out: Path) -> None:
    """Create ``out``; raises :class:`OutputFolderError` naming the part of the path that is in the way."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else (e.strerror or str(e))
        raise OutputFolderError(f"cannot create the output folder {out}: {why}") from None


@contextmanager
def locked(out: Path):
    """Hold the folder's set-up/finalize lock (``out/.lock``, exclusive, blocking) inside the block."""
    _make_out(out)
    with open(out / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class OutputFolderBusyError(OutputFolderError):
    """Another ``maskbench synth`` run is writing into the output folder (the same shard, or another job)."""


def _describe(job: dict[str, Any]) -> str:
    return f"shard {job.get('shard_index')} of {job.get('num_shards')}"


def _job_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two runs' job descriptions, apart from the shard index."""
    keys = [k for k in new if k != "shard_index"]
    diff = [k for k in keys if k != "config" and old.get(k) != new.get(k)]
    oc, nc = old.get("config") or {}, new.get("config") or {}
    return [f"{k} {oc.get(k)!r} vs {nc.get(k)!r}" for k in nc if oc.get(k) != nc.get(k)] + [
        f"{k} {old.get(k)!r} vs {new.get(k)!r}" for k in diff]


class ShardLock:
    """The run lock of one shard of a ``maskbench synth`` job, held from set-up to the end of the run.

    It is ``out/.progress/shard-IIIII-of-KKKKK.lock``, locked with ``fcntl.flock`` (exclusive, non-blocking;
    the system drops it when the process dies, so a killed run leaves no stale lock) and holding the job's
    description as JSON: the settings, shard count, split and limit. Take and release it with the folder's
    set-up lock held (:func:`locked`), so no run sees a half-written description or a lock file that is
    being removed.

    Args:
        out: the output folder (it exists).
        job: this run's description: JSON-able, with ``shard_index`` and ``num_shards``.

    Raises:
        OutputFolderBusyError: another process holds this shard's lock, or a shard of another job (any
            description that differs in more than the shard index) is running in ``out``; the message
            is one line naming the folder, the shard and, for another job, what differs.
    """

    def __init__(self, out: Path, job: dict[str, Any]):
        self.out = Path(out)
        self.job = json.loads(json.dumps(job))
        progress = self.out / PROGRESS_DIR
        progress.mkdir(parents=True, exist_ok=True)
        self.path = progress / f"shard-{job['shard_index']:05d}-of-{job['num_shards']:05d}.lock"
        for other in sorted(progress.glob("shard-*.lock")):
            if other != self.path:
                held = _held_by_other(other)
                if held is not None:
                    diff = _job_diff(held, self.job)
                    if diff:
                        raise OutputFolderBusyError(
                            f"{self.out} is being written by another synth run ({_describe(held)}) with other "
                            f"settings ({'; '.join(diff)}): wait for it to finish or use another --out")
        self._file: IO[str] | None = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held to release())
        try:  # opened with "a+": "w" would wipe the text of a process that holds it
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            self._file = None
            raise OutputFolderBusyError(
                f"{self.out} is being written by another synth run of the same shard ({_describe(self.job)}): "
                "wait for it to finish or use another --out") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(self.job, sort_keys=True))
        self._file.flush()

    def release(self, remove: bool = True) -> None:
        """Drop the lock (idempotent); ``remove`` deletes its file first (only with :func:`locked` held)."""
        if self._file is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        self._file.close()  # closing the last descriptor drops the flock
        self._file = None


def _held_by_other(path: Path) -> dict[str, Any] | None:
    """The job description in a shard lock file that another process holds, or ``None`` if it is free."""
    try:
        with open(path, encoding="utf-8") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return json.loads(f.read())
                except (UnicodeDecodeError, json.JSONDecodeError):
                    return {"shard_index": "?", "num_shards": "?", "unreadable": True}
            return None  # free: closing the file drops the shared lock just taken
    except FileNotFoundError:
        return None


_CONTENT_KEYS = ("config", "template_library")


def check_manifest(out: Path, manifest: dict[str, Any], has_samples: bool,
                   config_defaults: dict[str, Any] | None = None) -> None:
    """Refuse other settings in a folder that holds samples; a folder with none is taken over.

    ``config_defaults``: values of settings added after a folder was made (its manifest lacks them), so that
    it still resumes when they are left at these values.

    A folder whose runs made no sample yet (the first run failed, or every input was skipped) may be
    restarted with other settings: its skip entries and progress logs are dropped, as they were made with
    the old settings. Call with the folder locked.

    Raises:
        DatasetMismatchError: ``out`` holds samples made with other settings, or a damaged manifest.
    """
    path = out / MANIFEST_FILE
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        if has_samples:
            raise DatasetMismatchError(f"{path} is damaged (not JSON) and the folder holds samples: use another "
                                       "--out") from None
        old = {}
    old_cfg = {k: old.get(k) for k in _CONTENT_KEYS} | {"source": old.get("source", {}).get("name")}
    if config_defaults and isinstance(old_cfg["config"], dict):
        old_cfg["config"] = {**config_defaults, **old_cfg["config"]}
    new_cfg = {k: manifest.get(k) for k in _CONTENT_KEYS} | {"source": manifest["source"]["name"]}
    if json.loads(json.dumps(old_cfg)) != json.loads(json.dumps(new_cfg)):
        diff = [k for k in new_cfg if old_cfg.get(k) != json.loads(json.dumps(new_cfg[k]))]
        if "config" in diff:
            oc, nc = old_cfg["config"] or {}, json.loads(json.dumps(new_cfg["config"]))
            diff = [f"{k} {oc.get(k)!r} vs {nc.get(k)!r}" for k in nc if oc.get(k) != nc.get(k)] + [
                d for d in diff if d != "config"]
        if not has_samples:
            _drop_state(out)
            return
        raise DatasetMismatchError(
            f"{out} holds a dataset made with other settings ({'; '.join(diff)}): use another --out"
        )


def _drop_state(out: Path) -> None:
    """Forget the skip entries and progress logs of a folder that holds no sample."""
    (out / SKIPPED_FILE).unlink(missing_ok=True)
    if (out / PROGRESS_DIR).is_dir():
        for log in (out / PROGRESS_DIR).glob("*.jsonl"):
            log.unlink()


def drop_partial_line(path: Path) -> None:
    """Cut a log's unfinished last line (left by a killed run) so appended lines start on their own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def read_counts(out: Path) -> dict[str, Any]:
    path = out / MANIFEST_FILE
    try:
        return json.loads(path.read_text()).get("counts", {}) if path.is_file() else {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return {}


def finalize(out: Path, manifest: dict[str, Any]) -> dict[str, int]:
    """Write the per-split metadata tables, the skipped table, the manifest and the card."""
    records, skips = load_state(out)
    counts: dict[str, Any] = {"skipped": len(skips)}
    for s in SPLITS:
        rows = sorted((r for r in records.values() if r["split"] == s), key=lambda r: r["id"])
        if rows:
            write_metadata(out / s, rows)
        else:  # an empty split must not exist on disk: the hub loader would infer a different format for it
            (out / s / METADATA_FILE).unlink(missing_ok=True)
            for sub in ("masked", "original", "mask", ""):
                d = out / s / sub
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()
        counts[s] = len(rows)
        counts[f"{s}_by_type"] = dict(sorted(Counter(r["mask_type"] for r in rows).items()))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["source_id", "path", "reason"])
    for sid in sorted(skips):
        w.writerow([sid, skips[sid].get("path", ""), skips[sid]["skipped"]])
    atomic_write_text(out / SKIPPED_FILE, buf.getvalue())
    counts["skipped_by_reason"] = dict(sorted(Counter(e["skipped"].split(":")[0] for e in skips.values()).items()))
    full = {**manifest, "counts": counts}
    atomic_write_json(out / MANIFEST_FILE, full)
    write_card(out, full)
    return {k: v for k, v in counts.items() if isinstance(v, int)}
