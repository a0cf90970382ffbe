"""Build the leaderboard from results folders: ``leaderboard.csv``, ``leaderboard.md``, ``index.html``.

The leaderboard is derived, never edited by hand (lm-eval's results files play the same role). Every
complete run (a folder holding ``summary.json`` + ``manifest.json`` with ``complete: true``) under the
given results roots is read, and runs are merged into **one row per (method, method options, weights,
dataset)**: repeated runs of one seed (say with and without ``--save-outputs``) count once (the latest),
and several seeds of a sampling method are aggregated (per-image scores averaged over seeds; the spread
of the seed means is reported as ``<metric>_seed_sd``).

Ranking is honest about failures: the evaluator scores a failed image as the masked input (the floor);
a run made before that rule (failed images dropped) is marked incomplete and ranked below every complete
row of its track and dataset. Every table shows the failure count. NaN is never averaged away unseen: a
run whose per-image table has scored images without a number where one is due (:func:`nan_scored_images`,
counted in ``nan_images``) is flagged in its row and ranked below the complete rows like an incomplete run.

Each mean comes with its 95 % percentile-bootstrap interval, and within a track and dataset the rows
not significantly different from the best (two-sided Wilcoxon signed-rank test on the images both
scored, p >= 0.05, no multiplicity correction) are marked (**bold** in Markdown, shaded in HTML).
Each dataset also gets a **ceiling** row: the original photos scored the same way (identity rank-1 of
the originals against the other photos; perfect pixel scores by definition).

A dataset **rebuilt** (the same split's faces synthesized again, e.g. by a newer renderer: same folder
name, split and sample ids, another fingerprint) supersedes the older build
(:func:`superseded_builds`): the main tables, breakdowns and charts show the current build; the older
builds' tables follow under "Superseded builds", each ranked within itself, never against another build
(``superseded_by`` in the CSV).

Numbers reported in papers come from a CSV (default ``{out}/reported.csv``) with columns ``method``,
``paper``, ``protocol`` and metric columns, shown as separate rows marked "reported in paper, other
protocol" and never ranked with measured rows.

Also written: ``by_mask_type.png`` (primary metric per mask type, one panel per dataset, with 95 %
intervals) and ``samples.png`` (input | each method with saved outputs | ground truth, with ids).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..core.errors import MaskbenchError, MissingFileError
from ..core.io import atomic_write_text
from ..measures.metrics import METRICS, format_value, get_metric, higher_is_better
from ..measures.stats import PSNR_CAP_DB, bootstrap_ci, paired_comparison, wilcoxon_p

__all__ = [
    "REPORTED_COLUMNS",
    "REPORTED_NOTE",
    "CEILING_NAME",
    "DamagedRunWarning",
    "collect_results",
    "merge_runs",
    "nan_scored_images",
    "load_reported",
    "build_leaderboard",
    "compare_methods",
    "superseded_builds",
    "collect_wild_results",
    "wild_rows",
    "WILD_FLOOR_NAME",
    "WILD_REFERENCE_NAME",
]

REPORTED_COLUMNS = ("method", "paper", "protocol")
REPORTED_NOTE = "reported in paper, other protocol"
CEILING_NAME = "ceiling (original photos)"
WILD_FLOOR_NAME = "floor (unrestored input)"
WILD_REFERENCE_NAME = "reference faces (unmasked)"
WILD_CEILING_NAME = "ceiling (real unmasked faces, held out of the reference)"
#: The in-the-wild table's set-level scores (lower is better for all three).
WILD_METRICS = ("fid", "kid", "mask_left_behind")
ALPHA = 0.05
_KEY = ["method", "method_args", "weights", "dataset_fp", "split", "track"]


class ResultsError(MaskbenchError, ValueError):
    """Results that cannot be compared or ranked as asked (no common dataset, no run of a method, a bad
    reported-numbers table)."""


class DamagedRunWarning(UserWarning):
    """A run under the results folder was skipped: its summary or manifest cannot be read."""


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; raises ValueError (with the reason) for anything else."""
    try:
        obj = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not readable JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"a JSON {type(obj).__name__}, not an object")
    return obj


def _dataset_label(info: dict[str, Any], fingerprint: str | None) -> str:
    """``folder/split@fingerprint[:8]``: readable, and still distinct for two datasets of one name."""
    name = Path(info["path"]).name if info.get("path") else "dataset"
    return f"{name}/{info.get('split', '?')}@{(fingerprint or '')[:8]}"


def _training_text(card: Any) -> str:
    """A weights card (config, resolution, steps, images seen, device, wall time, loss network) as one short
    cell."""
    if not isinstance(card, dict) or not card:
        return ""
    parts = []
    for key, fmt in (("config_name", "config {}"), ("size", "{} px"), ("resolution", "{} px"), ("steps", "{} steps"), ("images_seen", "{} images"),
                     ("device", "{}"), ("wall_time_s", "{:.0f} s"), ("loss_network", "loss net {}")):
        if card.get(key) is not None:
            try:
                parts.append(fmt.format(card[key]))
            except (TypeError, ValueError):
                parts.append(str(card[key]))
    return ", ".join(parts) if parts else json.dumps(card, sort_keys=True)


def _roots(results) -> list[Path]:
    if isinstance(results, (str, os.PathLike)):
        results = [results]
    roots = [Path(r) for r in results]
    for r in roots:
        if not r.is_dir():
            raise MissingFileError(f"results folder {r} does not exist")
    return roots


def collect_results(results) -> pd.DataFrame:
    """One row per complete run under the results root(s) (searched recursively).

    Args:
        results: a results root (``maskbench evaluate --out``) or a list of them.

    Returns:
        Columns ``method, method_args, weights, training, track, dataset, dataset_fp, split, n, n_failed,
        complete, identity_model, seed, finished, run_dir`` and per metric the mean and ``<m>_lo``/``<m>_hi``
        (95 % interval); empty frame if none. ``complete`` is False for runs that dropped failed images.

    Warns:
        DamagedRunWarning: naming the file, for each run skipped because its ``summary.json`` or
            ``manifest.json`` is not readable JSON or lacks what a row needs.

    Raises:
        FileNotFoundError: a results root is not a folder.
    """
    return pd.DataFrame(_rows(results, _run_row))


def _rows(results, make_row) -> list[dict[str, Any]]:
    """``make_row(run, summary_path, manifest_path)`` for every run folder holding both files under the
    results root(s), in path order; ``None`` rows are left out, a damaged run is skipped with a
    :class:`DamagedRunWarning` naming it."""
    rows = []
    for root in _roots(results):
        for summary_path in sorted(root.rglob("summary.json")):
            run = summary_path.parent
            manifest_path = run / "manifest.json"
            if not manifest_path.is_file():
                continue
            try:
                row = make_row(run, summary_path, manifest_path)
            except (ValueError, TypeError, AttributeError, KeyError) as e:
                warnings.warn(f"skipped run {run}: {e}", DamagedRunWarning, stacklevel=3)
                continue
            if row is not None:
                rows.append(row)
    return rows


def _run_row(run: Path, summary_path: Path, manifest_path: Path) -> dict[str, Any] | None:
    """One leaderboard row, ``None`` for an incomplete run; raises ValueError naming the damaged file."""
    try:
        manifest = _read_json(manifest_path)
    except ValueError as e:
        raise ValueError(f"{manifest_path}: {e}") from None
    if not manifest.get("complete") or manifest.get("kind") == "wild":
        return None  # wild runs have their own table (collect_wild_results)
    try:
        s = _read_json(summary_path)
        if not isinstance(s.get("method"), str) or not isinstance(s.get("metrics", {}), dict):
            raise ValueError("no method name or metrics")
        cfg = manifest.get("config", {})
        method_info = manifest.get("method", {})
        card = method_info.get("weights_card")
        n_failed = int(s.get("n_failed", 0))
        row: dict[str, Any] = {
            "method": s["method"],
            "method_args": json.dumps(cfg.get("method_args") or [], sort_keys=True),
            "weights": json.dumps(card, sort_keys=True) if card else str(cfg.get("weights") or ""),
            "training": _training_text(card),
            "track": s.get("track"),
            "dataset": _dataset_label(manifest.get("dataset", {}), s.get("dataset_fingerprint")),
            "dataset_fp": s.get("dataset_fingerprint"),
            "dataset_path": manifest.get("dataset", {}).get("path"),
            "split": s.get("split"),
            "n": s.get("n"),
            "n_failed": n_failed,
            "complete": n_failed == 0 or s.get("failures_scored_as") is not None,
            "identity_model": s.get("identity_model"),
            "seed": manifest.get("seed", cfg.get("seed")),
            "finished": manifest.get("finished", ""),
            "run_dir": str(run),
            "ceiling": json.dumps(s.get("ceiling")) if s.get("ceiling") else "",
        }
        for name, m in s.get("metrics", {}).items():
            row[name] = m.get("mean")
            row[f"{name}_lo"], row[f"{name}_hi"] = (m.get("ci95") or [None, None])[:2]
        row["fid"] = s.get("fid")
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{summary_path}: {e}") from None
    return row


def collect_wild_results(results) -> pd.DataFrame:
    """One row per complete in-the-wild run (:mod:`maskbench.bench.wild`) under the results root(s).

    Returns:
        Columns ``method, method_args, weights, training, track, mask_source, mask_source_args,
        mask_weights, data, data_fp, reference, reference_fp, n_photos, n_faces, n_failed, finished,
        run_dir, sheet`` and, per metric of :data:`WILD_METRICS`, the value, ``<m>_lo``/``<m>_hi`` and
        ``floor_<m>`` (+ its interval); empty frame if none.

    Warns:
        DamagedRunWarning: for each wild run whose files cannot be read.

    Raises:
        FileNotFoundError: a results root is not a folder.
    """
    def make_row(run: Path, summary_path: Path, manifest_path: Path) -> dict[str, Any] | None:
        manifest = _read_json(manifest_path)
        if manifest.get("kind") != "wild" or not manifest.get("complete"):
            return None
        return _wild_row(run, _read_json(summary_path), manifest)

    return pd.DataFrame(_rows(results, make_row))


def _wild_row(run: Path, s: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    cfg = manifest.get("config", {})
    card = manifest.get("method", {}).get("weights_card")
    mask_card = manifest.get("mask_source", {}).get("weights_card")
    row: dict[str, Any] = {
        "method": s["method"],
        "method_args": json.dumps(cfg.get("method_args") or [], sort_keys=True),
        "weights": json.dumps(card, sort_keys=True) if card else "",
        "training": _training_text(card),
        "track": s.get("track"),
        "mask_source": s.get("mask_source"),
        "mask_source_args": json.dumps(sorted((s.get("mask_source_options") or {}).items()), sort_keys=True),
        "mask_weights": json.dumps(mask_card, sort_keys=True) if mask_card else "",
        "data": f"{Path(str(s.get('data', ''))).name or s.get('data')}@{str(s.get('dataset_fingerprint'))[:8]}",
        "data_fp": s.get("dataset_fingerprint"),
        # a run that held a ceiling out of the reference compares against the rest: a section of its own
        "reference": f"{Path(str(s.get('reference', ''))).name}@{str(s.get('reference_fingerprint'))[:8]}"
                     + (f" minus a {s['n_ceiling']}-face ceiling" if s.get("n_ceiling") else ""),
        "reference_fp": s.get("reference_fingerprint") + (f"|ceiling:{s['n_ceiling']}" if s.get("n_ceiling") else ""),
        "n_photos": s["n_photos"],
        "n_faces": s["n_faces"],
        "n_reference": s.get("n_reference"),
        "n_failed": int(s.get("n_failed", 0)),
        "left_threshold": s.get("settings", {}).get("left_threshold"),
        "finished": manifest.get("finished", ""),
        "run_dir": str(run),
        "sheet": str(run / "contact_sheet.jpg") if (run / "contact_sheet.jpg").is_file() else "",
    }
    for prefix, block in (("", s["metrics"]), ("floor_", s["floor"]), ("ceiling_", s.get("ceiling") or {}),
                          ("reference_", {"mask_left_behind": s.get("reference_mask_rate")})):
        for m in WILD_METRICS + (("kid_gap_closed",) if prefix == "" else ()):
            d = block.get(m) or {}
            row[f"{prefix}{m}"] = d.get("value")
            row[f"{prefix}{m}_lo"], row[f"{prefix}{m}_hi"] = (d.get("ci95") or [None, None])[:2]
    return row


def wild_rows(results) -> pd.DataFrame:
    """The in-the-wild table: the latest run per (method, options, weights, mask source and its options and
    weights, photos, reference), ranked by KID within each (photos, reference) section, then one floor row
    per section and segmenter (FID and KID of the unrestored inputs; the segmenter's detection rate on them
    as ``mask_left_behind``) and one reference row (how often the segmenter flags the unmasked reference
    faces: its false-alarm rate). Empty frame when there are no wild runs.

    Raises:
        FileNotFoundError: a results root is not a folder.
    """
    runs = collect_wild_results(results)
    if runs.empty:
        return runs
    key = ["method", "method_args", "weights", "mask_source", "mask_source_args", "mask_weights", "data_fp",
           "reference_fp"]
    runs = runs.sort_values("finished", kind="stable").drop_duplicates(key, keep="last")
    parts = []
    for _, g in runs.groupby(["data_fp", "reference_fp"], sort=True):
        g = g.sort_values("kid", na_position="last", kind="stable").copy()
        g.insert(0, "rank", range(1, len(g) + 1))
        g["source"] = "measured"
        floors = []
        for _, f in g.groupby(["mask_source", "mask_source_args", "mask_weights"], sort=True):
            r = f.sort_values("finished", kind="stable").iloc[-1]  # the latest run's floor and reference rate
            floor = {c: r[c] for c in ("data", "data_fp", "reference", "reference_fp", "n_photos", "n_faces",
                                       "n_reference", "left_threshold", "mask_source", "mask_source_args")}
            floor.update({"method": WILD_FLOOR_NAME, "source": "floor", "n_failed": 0, "track": ""})
            reference = {**floor, "method": WILD_REFERENCE_NAME, "source": "reference"}
            for m in WILD_METRICS:
                for suffix in ("", "_lo", "_hi"):
                    floor[f"{m}{suffix}"] = r[f"floor_{m}{suffix}"]
                    reference[f"{m}{suffix}"] = r.get(f"reference_{m}{suffix}")
            floors.append(floor)
            if r.get("ceiling_kid") is not None and not pd.isna(r.get("ceiling_kid")):
                ceiling = {**floor, "method": WILD_CEILING_NAME, "source": "ceiling"}
                for m in WILD_METRICS:
                    for suffix in ("", "_lo", "_hi"):
                        ceiling[f"{m}{suffix}"] = r.get(f"ceiling_{m}{suffix}")
                ceiling["kid_gap_closed"], floor["kid_gap_closed"] = 1.0, 0.0
                floors.append(ceiling)
            if reference.get("mask_left_behind") is not None and not pd.isna(reference["mask_left_behind"]):
                floors.append(reference)
        parts += [g, pd.DataFrame(floors)]
    return pd.concat(parts, ignore_index=True)


#: Per-image scores every scored image must have as a number (when its table has the column): the
#: pixel scores, identity cosine and match, mask IoU and F1. The hole scores are due only where the image
#: has a hole; identity_rank1 (undefined for a person without another photo) and landmark_nme (methods
#: that give landmarks) may be missing.
_DUE_SCORES = ("l1", "psnr", "ssim", "l1_hole", "psnr_hole", "ssim_hole", "identity_cosine", "identity_match",
               "mask_iou", "mask_f1")


def nan_scored_images(table: pd.DataFrame) -> int:
    """How many images of a ``per_image.parquet`` table were scored (no ``error``) but lack a due score.

    A due score (:data:`_DUE_SCORES` present in the table) is missing when it is NaN or infinite (PSNR's
    +inf, an exact match, is a score); the hole scores are due only where ``hole_fraction`` is not 0.
    Failed images (``error`` set) are counted by ``n_failed`` instead.
    """
    scored = table["error"].isna().to_numpy() if "error" in table.columns else np.ones(len(table), bool)
    hole = (pd.to_numeric(table["hole_fraction"], errors="coerce").fillna(1.0).to_numpy() > 0
            if "hole_fraction" in table.columns else np.ones(len(table), bool))
    missing = np.zeros(len(table), bool)
    for c in _DUE_SCORES:
        if c in table.columns:
            v = pd.to_numeric(table[c], errors="coerce").to_numpy(np.float64)
            bad = ~np.isfinite(v) & ~(c.startswith("psnr") & (v == np.inf))
            missing |= bad & hole if c.endswith("_hole") else bad
    return int((missing & scored).sum())


def _per_image(run_dirs: list[str]) -> tuple[pd.DataFrame | None, int]:
    """The per-image table of one run, or the per-image mean over several runs (seeds), and the most
    :func:`nan_scored_images` of any of them; ``(None, 0)`` if a table is missing."""
    frames = []
    nan_images = 0
    for d in run_dirs:
        p = Path(d) / "per_image.parquet"
        if not p.is_file():
            return None, 0
        t = pd.read_parquet(p)
        nan_images = max(nan_images, nan_scored_images(t))
        cols = ["id"] + [c for c in t.columns if c in METRICS and get_metric(c).per_image]
        t = t[cols].copy()
        for c in cols[1:]:
            if c.startswith("psnr"):
                t[c] = np.minimum(t[c].astype(float), PSNR_CAP_DB)
        frames.append(t)
    if len(frames) == 1:
        return frames[0], nan_images
    return pd.concat(frames).groupby("id", sort=False).mean(numeric_only=True).reset_index(), nan_images


def merge_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, pd.DataFrame]]:
    """Merge runs into one row per (method, options, weights, dataset, split, track).

    Per seed the latest finished run counts; with several seeds the per-image scores are averaged over
    seeds and each metric gets ``<m>_seed_sd`` (standard deviation of the seed means).

    Returns:
        ``(rows, per_image)``: one row per key (``seeds``, ``runs``, ``run_dir`` of the latest,
        ``nan_images``: the most images of one seed with a due score missing, see
        :func:`nan_scored_images`), and the per-image table behind each row by row position (missing when
        a run has no ``per_image.parquet``).
    """
    if runs.empty:
        return runs, {}
    runs = runs.sort_values("finished", kind="stable")
    out_rows, tables = [], {}
    for _, g in runs.groupby(_KEY, sort=False, dropna=False):
        latest = g.iloc[-1]
        g = g[g["identity_model"].fillna("") == (latest["identity_model"] or "")]  # one recognizer per row
        per_seed = g.drop_duplicates("seed", keep="last")
        row = latest.to_dict()
        row["seeds"] = len(per_seed)
        row["runs"] = len(g)
        row["n_failed"] = int(per_seed["n_failed"].max())
        row["complete"] = bool(per_seed["complete"].all())
        with_outputs = [d for d in g["run_dir"] if (Path(d) / "outputs").is_dir()]
        row["outputs_dir"] = str(Path(with_outputs[-1]) / "outputs") if with_outputs else ""
        table, row["nan_images"] = _per_image(per_seed["run_dir"].tolist())
        metric_cols = [c for c in METRICS if c in per_seed.columns]
        for c in metric_cols:
            vals = pd.to_numeric(per_seed[c], errors="coerce")
            row[c] = float(vals.mean()) if vals.notna().any() else None
            if len(per_seed) > 1:
                row[f"{c}_seed_sd"] = float(vals.std(ddof=1)) if vals.notna().sum() > 1 else None
        if table is not None:
            for c in table.columns[1:]:
                a = table[c].to_numpy(np.float64)
                a = a[~np.isnan(a)]
                if a.size:
                    row[c] = float(a.mean())
                    row[f"{c}_lo"], row[f"{c}_hi"] = bootstrap_ci(a)
            tables[len(out_rows)] = table
        out_rows.append(row)
    return pd.DataFrame(out_rows), tables


def _rank_and_mark(rows: pd.DataFrame, tables: dict[int, pd.DataFrame], primary: str) -> pd.DataFrame:
    """Sort and rank within (track, dataset): complete rows by ``primary``, then incomplete ones and those
    with NaN scores (``nan_images``); add ``<m>_best`` (best or not significantly different from it) per
    per-image metric, among the complete rows without NaN scores."""
    if rows.empty:
        return rows
    rows = rows.copy()
    rows["_pos"] = range(len(rows))
    asc = not higher_is_better(primary)
    parts = []
    for _, g in rows.groupby(["track", "dataset"], sort=True):
        g = g.assign(_incomplete=~g["complete"].astype(bool) | (_nan_images(g) > 0))
        g = g.sort_values(["_incomplete", primary], ascending=[True, asc], na_position="last", kind="stable")
        g.insert(0, "rank", range(1, len(g) + 1))
        for m, spec in METRICS.items():
            if not spec.per_image or m not in g.columns:
                continue
            g[f"{m}_best"] = _tied_with_best(g, tables, m)
        parts.append(g.drop(columns="_incomplete"))
    return pd.concat(parts, ignore_index=True)


def _nan_images(g: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(g["nan_images"], errors="coerce").fillna(0) if "nan_images" in g.columns \
        else pd.Series(0, index=g.index)


def _tied_with_best(g: pd.DataFrame, tables: dict[int, pd.DataFrame], m: str) -> pd.Series:
    marks = pd.Series(False, index=g.index)
    cand = g[g["complete"].astype(bool) & (_nan_images(g) == 0) & g[m].notna()]
    if cand.empty:
        return marks
    best_idx = cand[m].idxmax() if higher_is_better(m) else cand[m].idxmin()
    marks[best_idx] = True
    best_t = tables.get(int(g.loc[best_idx, "_pos"]))
    if best_t is None or m not in best_t.columns:
        return marks
    for idx, r in cand.iterrows():
        t = tables.get(int(r["_pos"]))
        if idx == best_idx or t is None or m not in t.columns:
            continue
        j = best_t[["id", m]].merge(t[["id", m]], on="id", suffixes=("_b", "_o")).dropna()
        if len(j) and wilcoxon_p(j[f"{m}_b"].to_numpy() - j[f"{m}_o"].to_numpy()) >= ALPHA:
            marks[idx] = True
    return marks


def _ceiling_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (track, dataset): the original photos scored the same way."""
    out = []
    for (track, dataset), g in rows.groupby(["track", "dataset"], sort=True):
        with_ceiling = g[g["ceiling"].astype(bool)]
        if with_ceiling.empty:
            continue
        ref = with_ceiling.iloc[0]
        ceil = json.loads(ref["ceiling"])
        row = {"method": CEILING_NAME, "track": track, "dataset": dataset, "n": ref["n"], "n_failed": 0,
               "complete": True, "identity_model": ref["identity_model"], "source": "ceiling",
               "l1": 0.0, "l1_hole": 0.0, "psnr": PSNR_CAP_DB, "psnr_hole": PSNR_CAP_DB, "ssim": 1.0,
               "ssim_hole": 1.0, "fid": 0.0}
        for m, d in ceil.items():
            row[m] = d.get("mean")
            row[f"{m}_lo"], row[f"{m}_hi"] = (d.get("ci95") or [None, None])[:2]
        out.append(row)
    return pd.DataFrame(out)


def load_reported(path: str | os.PathLike) -> pd.DataFrame:
    """Read paper-reported numbers.

    Args:
        path: CSV with columns ``method, paper, protocol`` and metric columns (known metric names).

    Returns:
        A frame with ``source = "reported in paper, other protocol"``; empty if the file has no rows.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a required column is missing, a column is not a known metric, or a value is not a
            number.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"reported-numbers file {p} does not exist")
    df = pd.read_csv(p, comment="#", dtype=str, keep_default_na=False)
    missing = [c for c in REPORTED_COLUMNS if c not in df.columns]
    if missing:
        raise ResultsError(f"{p}: missing column(s) {', '.join(missing)} (need {', '.join(REPORTED_COLUMNS)} + metrics)")
    for c in [c for c in df.columns if c not in REPORTED_COLUMNS]:
        try:
            higher_is_better(c)
        except KeyError:
            raise ResultsError(f"{p}: column {c!r} is not a known metric") from None
        try:
            df[c] = [float(v) if v else np.nan for v in df[c].str.strip()]
        except ValueError:
            raise ResultsError(f"{p}: column {c!r} holds a value that is not a number") from None
    df["source"] = REPORTED_NOTE
    return df


def superseded_builds(runs: pd.DataFrame) -> dict[str, str]:
    """Which dataset builds a newer build of the same split replaces: ``{old label: new label}``.

    Two builds are of the same split when their labels share folder name and split
    (``celeba-masked/test@...``) and their runs scored the same sample ids (the same source faces,
    re-synthesized: another renderer, say); a build made with ``--limit`` or from other faces is another
    dataset, not a rebuild. Of such builds the one first scored most recently is current; each older one
    is superseded by it.

    Args:
        runs: :func:`collect_results` rows (``dataset``, ``finished``, ``run_dir``, ``n``).

    Returns:
        The superseded labels, each mapped to the label of the current build; ``{}`` when there are none.
    """
    if runs.empty:
        return {}
    builds = []
    for label, g in runs.groupby("dataset", sort=True):
        builds.append((label.rsplit("@", 1)[0], _sample_ids(g), str(g["finished"].min()), label))
    out: dict[str, str] = {}
    for name, ids, _, label in builds:
        same = [b for b in builds if b[0] == name and b[1] == ids]
        current = max(same, key=lambda b: (b[2], b[3]))[3]
        if current != label:
            out[label] = current
    return out


def _sample_ids(g: pd.DataFrame) -> frozenset[str] | int:
    """The sample ids one of the runs ``g`` (of one dataset) scored, or their count where no run has a
    readable ``per_image.parquet``."""
    for d in g["run_dir"]:
        try:
            return frozenset(pd.read_parquet(Path(d) / "per_image.parquet", columns=["id"])["id"].astype(str))
        except (OSError, ValueError, KeyError):
            continue
    return int(pd.to_numeric(g["n"], errors="coerce").max())


def build_leaderboard(
    results,
    out: str | os.PathLike,
    *,
    reported: str | os.PathLike | None = None,
    primary: str = "ssim_hole",
) -> list[Path]:
    """Aggregate results into ``out``: CSV, Markdown, HTML, per-mask-type chart, sample grid.

    Args:
        results: a results root or a list of roots (merged; the same run found twice counts once).
        out: output folder (created).
        reported: paper-numbers CSV; ``None`` uses ``out/reported.csv`` when it exists.
        primary: the metric rows are sorted by (direction from the metric registry).

    Returns:
        The paths written.

    Raises:
        FileNotFoundError: a results root (or an explicit ``reported``) does not exist.
        KeyError: ``primary`` is not a known metric.
        ValueError: malformed reported file.
    """
    higher_is_better(primary)  # raises KeyError for unknown names
    out = Path(out)
    runs = collect_results(results)
    if not runs.empty:
        runs = runs.drop_duplicates("run_dir").assign(_real=runs["run_dir"].map(lambda d: str(Path(d).resolve())))
        runs = runs.drop_duplicates("_real").drop(columns="_real")
    rows, tables = merge_runs(runs)
    measured = _rank_and_mark(rows, tables, primary)
    superseded = superseded_builds(runs)
    if not measured.empty:
        measured["source"] = "measured"
        measured["superseded_by"] = measured["dataset"].map(lambda d: superseded.get(d, ""))
    ceilings = _ceiling_rows(measured) if not measured.empty else pd.DataFrame()
    if not ceilings.empty:
        ceilings["superseded_by"] = ceilings["dataset"].map(lambda d: superseded.get(d, ""))
    current = measured[measured["superseded_by"] == ""] if not measured.empty else measured
    rep_path = Path(reported) if reported is not None else out / "reported.csv"
    rep = load_reported(rep_path) if (reported is not None or rep_path.is_file()) else pd.DataFrame()
    table = pd.concat([t for t in (measured, ceilings, rep) if not t.empty], ignore_index=True) \
        if not (measured.empty and rep.empty) else pd.DataFrame(columns=["method", primary])
    out.mkdir(parents=True, exist_ok=True)
    written = []
    csv_cols = [c for c in table.columns if not c.startswith("_") and c not in ("ceiling", "outputs_dir")]
    atomic_write_text(out / "leaderboard.csv", table[csv_cols].to_csv(index=False))
    written.append(out / "leaderboard.csv")
    from .report import breakdown_tables, mask_type_chart, render_html, render_markdown, sample_grid

    breakdowns = breakdown_tables(current, primary)
    chart = mask_type_chart(current, primary, out / "by_mask_type.png")
    grid = sample_grid(current, out / "samples.png")
    meta = _provenance()
    wild = wild_rows(results)
    if not wild.empty:
        cols = [c for c in wild.columns if not c.startswith("_")]
        atomic_write_text(out / "wild.csv", wild[cols].to_csv(index=False))
        written.append(out / "wild.csv")
    atomic_write_text(out / "leaderboard.md", render_markdown(table, breakdowns, primary, meta, wild=wild))
    written.append(out / "leaderboard.md")
    written += [p for p in (chart, grid) if p is not None]
    atomic_write_text(out / "index.html", render_html(table, breakdowns, primary, meta, out, chart, grid, wild=wild))
    written.append(out / "index.html")
    return written


def _provenance() -> dict[str, str]:
    from ..core.resources import git_commit

    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "version": __version__,
            "commit": (git_commit() or "unknown")[:12]}


def compare_methods(a: str, b: str, results, *, dataset: str | None = None, metrics=None) -> tuple[pd.DataFrame, dict]:
    """Paired comparison of two methods (or two run folders) on the images both scored.

    Args:
        a, b: method names (looked up under ``results``, seeds merged as in the leaderboard) or run folders.
        results: results root(s); the first is taken as the user's own (``maskbench compare``: ``results/``).
        dataset: a dataset label or fingerprint prefix. ``None``: the one dataset both were scored on, or,
            where they share several, the latest: datasets on which both have runs under the first root come
            first, then the one on which both were last scored most recently.
        metrics: metric names (default: every per-image metric both hold).

    Returns:
        ``(table, info)``: :func:`maskbench.measures.stats.paired_comparison`'s table and ``{"a", "b",
        "dataset", "others"}``; ``others`` lists the other shared datasets when one was chosen by that rule.

    Raises:
        ResultsError: (a ``ValueError``) a method has no run, the two share no dataset (matching ``dataset``),
            or ``dataset`` matches several.
        FileNotFoundError: a results root does not exist.
    """
    roots = _roots(results)

    def resolve(x: str) -> pd.DataFrame:
        if Path(x).is_dir() and (Path(x) / "per_image.parquet").is_file():
            return collect_results([x])
        r = runs[runs["method"] == x]
        if r.empty:
            known = ", ".join(sorted(set(runs["method"]))) or "none"
            raise ResultsError(f"no complete run of {x!r} under {', '.join(map(str, roots))} (found: {known})")
        return r

    runs = collect_results(roots)
    if runs.empty:
        runs = pd.DataFrame(columns=["method", "dataset", "dataset_fp", "finished", "run_dir"])
    ra, rb = resolve(a), resolve(b)
    common = sorted(set(ra["dataset"]) & set(rb["dataset"]))
    if dataset is not None:
        common = [d for d in common if d == dataset or d.split("@")[-1].startswith(dataset) or dataset in d]
    if not common:
        raise ResultsError(f"{a} and {b} were not evaluated on a common dataset"
                           + (f" matching {dataset!r}" if dataset else ""))
    if len(common) > 1 and dataset is not None:
        raise ResultsError(f"--dataset {dataset} matches several datasets both were scored on "
                           f"({', '.join(common)}): give the full label or a longer fingerprint prefix")
    chosen = _latest_common(ra, rb, common, roots[0])
    others = [d for d in common if d != chosen]
    ta = _merged_table(ra[ra["dataset"] == chosen])
    tb = _merged_table(rb[rb["dataset"] == chosen])
    return paired_comparison(ta, tb, metrics), {"a": a, "b": b, "dataset": chosen, "others": others}


def _latest_common(ra: pd.DataFrame, rb: pd.DataFrame, common: list[str], own_root: Path) -> str:
    """The dataset of ``common`` to compare on: both methods' runs under ``own_root`` first, then the one
    on which the later of the two methods' latest runs is the most recent (ISO ``finished`` times)."""
    own = own_root.resolve()

    def key(d: str) -> tuple[bool, str]:
        ga, gb = ra[ra["dataset"] == d], rb[rb["dataset"] == d]
        mine = all(any(Path(x).resolve().is_relative_to(own) for x in g["run_dir"]) for g in (ga, gb))
        return mine, min(str(ga["finished"].max()), str(gb["finished"].max()))

    return max(common, key=key)


def _merged_table(runs: pd.DataFrame) -> pd.DataFrame:
    rows, tables = merge_runs(runs)
    if len(rows) > 1:
        opts = "; ".join(f"{r.method_args} {r.weights}".strip() or "defaults" for r in rows.itertuples())
        raise ResultsError(f"{rows.iloc[0]['method']} has runs with different options or weights ({opts}): "
                         "pass a run folder instead")
    if 0 not in tables:
        raise ResultsError(f"{rows.iloc[0]['run_dir']} has no per_image.parquet")
    return tables[0]


def format_comparison(table: pd.DataFrame, info: dict) -> str:
    """The ``maskbench compare`` report: the rule, then one line per metric (means, ``a - b``, its 95 %
    interval, the Wilcoxon p and the verdict), then a note for each way the test disagreed with the interval.

    The verdict follows one rule, the interval (:func:`maskbench.measures.stats.paired_comparison`'s
    ``better``): the method it favours, or "no significant difference" when it contains 0. The Wilcoxon
    signed-rank p (the leaderboard's test) is shown beside it; a row where ``p < 0.05`` says otherwise is
    marked ``*`` and explained below the table. An interval bound that would round to zero gets the digits it
    needs (no ``-0.0000``)."""
    n = int(table["n"].max()) if len(table) else 0
    lines = [f"{info['a']} - {info['b']} on {info['dataset']}, paired over the {n} images both scored",
             f"better: the method the 95% bootstrap interval of the mean difference favours; 'no significant "
             f"difference' where it contains 0. p: two-sided Wilcoxon signed-rank, beside it (* where p < {ALPHA} "
             "disagrees)"]
    lines.append(f"{'metric':16s} {'n':>5s} {'a':>9s} {'b':>9s} {'a - b':>11s} {'95% interval':>25s} {'p':>8s}  better")
    notes = set()
    for r in table.itertuples():
        f = lambda v: format_value(r.metric, v)  # noqa: E731
        g = _difference_format(r.metric, (r.ci_low, r.ci_high))
        better = {"a": info["a"], "b": info["b"]}.get(r.better, "no significant difference")
        test_says = r.p_wilcoxon < ALPHA
        if test_says != bool(r.better):
            better += " *"
            notes.add("contains" if test_says else "excludes")
        lines.append(f"{r.metric:16s} {r.n:5d} {f(r.mean_a):>9s} {f(r.mean_b):>9s} {g(r.diff):>11s} "
                     f"{'[' + g(r.ci_low) + ', ' + g(r.ci_high) + ']':>25s} {r.p_wilcoxon:8.2g}  {better}")
    if "contains" in notes:
        lines.append(f"* the interval contains 0 but Wilcoxon p < {ALPHA}: most images differ one way, by too little "
                     "to move the mean clear of 0; the verdict follows the interval")
    if "excludes" in notes:
        lines.append(f"* the interval excludes 0 but Wilcoxon p >= {ALPHA}: the mean moves with a few large "
                     "differences, the typical image does not; the verdict follows the interval")
    return "\n".join(lines)


def _difference_format(metric: str, bounds) -> Any:
    """A formatter for one row's difference and interval: the metric's own decimals, or more where an
    interval bound would round to zero at those (two significant figures for it, at most 8 decimals), so a
    bound never shows as ``-0.0000``; a value that rounds to zero prints unsigned."""
    import math
    import re

    spec = get_metric(metric).fmt
    m = re.fullmatch(r"\.(\d+)f", spec)
    if m is None:
        return lambda v: format_value(metric, v)
    decimals = int(m.group(1))
    for v in bounds:
        if v is not None and not math.isnan(v) and v != 0 and round(v, decimals) == 0:
            decimals = max(decimals, min(8, 1 - math.floor(math.log10(abs(v)))))

    def fmt(v):
        if v is None or math.isnan(v):
            return ""
        return f"{0.0:.{decimals}f}" if round(v, decimals) == 0 else f"{v:+.{decimals}f}"

    return fmt
