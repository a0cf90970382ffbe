"""Build the leaderboard from results folders: ``leaderboard.csv``, ``leaderboard.md``, ``index.html``.

The leaderboard is derived, never edited by hand (lm-eval's results files play the same role): every
complete run under ``--results`` (a folder holding ``summary.json`` + ``manifest.json`` with
``complete: true``) becomes one row. Rows are grouped by dataset fingerprint and track, and sorted by a
primary metric in the direction its :data:`maskbench.metrics.HIGHER_IS_BETTER` gives.

Numbers reported in papers come from a CSV (default ``{out}/reported.csv``) with columns ``method``,
``paper``, ``protocol``, and any metric columns (``l1``, ``psnr``, ``ssim``, ``fid``, ...). They are
shown as separate rows marked "reported in paper, other protocol" and never mixed into the ranking of
measured rows. maskbench ships that file with a header only: numbers go in with their source.

Also written: ``by_mask_type.png`` (primary metric per mask type and method, matplotlib) and
``samples.png`` (a grid of saved outputs per method, from runs made with ``--save-outputs``).
"""

from __future__ import annotations

import html
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .io import atomic_write_bytes, atomic_write_text
from .metrics import higher_is_better

__all__ = ["REPORTED_COLUMNS", "REPORTED_NOTE", "DamagedRunWarning", "collect_results", "load_reported",
           "build_leaderboard"]

REPORTED_COLUMNS = ("method", "paper", "protocol")
REPORTED_NOTE = "reported in paper, other protocol"
_SHOWN = ("l1", "psnr", "ssim", "l1_hole", "psnr_hole", "ssim_hole", "fid", "identity_cosine", "mask_iou", "mask_f1")


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


def collect_results(results: str | os.PathLike) -> pd.DataFrame:
    """One row per complete run under ``results`` (searched recursively).

    Args:
        results: the results root (``maskbench evaluate --out``).

    Returns:
        Columns ``method, track, dataset, split, n, n_failed, identity_model, run_dir, source`` and one
        column per metric mean (``fid`` included); ``source`` is ``"measured"``. Empty frame if none.

    Warns:
        DamagedRunWarning: naming the file, for each run skipped because its ``summary.json`` or
            ``manifest.json`` is not readable JSON or lacks what a row needs.

    Raises:
        FileNotFoundError: ``results`` is not a folder.
    """
    root = Path(results)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} does not exist")
    rows = []
    for summary_path in sorted(root.rglob("summary.json")):
        run = summary_path.parent
        manifest_path = run / "manifest.json"
        if not manifest_path.is_file():
            continue
        try:
            row = _run_row(run, summary_path, manifest_path)
        except ValueError as e:
            warnings.warn(f"skipped run {run}: {e}", DamagedRunWarning, stacklevel=2)
            continue
        if row is not None:
            rows.append(row)
    return pd.DataFrame(rows)


def _run_row(run: Path, summary_path: Path, manifest_path: Path) -> dict[str, Any] | None:
    """One leaderboard row, ``None`` for an incomplete run; raises ValueError naming the damaged file."""
    try:
        manifest = _read_json(manifest_path)
    except ValueError as e:
        raise ValueError(f"{manifest_path}: {e}") from None
    if not manifest.get("complete"):
        return None
    try:
        s = _read_json(summary_path)
        if not isinstance(s.get("method"), str) or not isinstance(s.get("metrics", {}), dict):
            raise ValueError("no method name or metrics")
        row: dict[str, Any] = {
            "method": s["method"],
            "track": s.get("track"),
            "dataset": _dataset_label(manifest.get("dataset") or {}, s.get("dataset_fingerprint")),
            "split": s.get("split"),
            "n": s.get("n"),
            "n_failed": s.get("n_failed", 0),
            "identity_model": s.get("identity_model"),
            "run_dir": str(run),
            "source": "measured",
            "paper": "",
            "protocol": "",
        }
        for name, m in s.get("metrics", {}).items():
            row[name] = m.get("mean") if isinstance(m, dict) else None
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{summary_path}: {e}") from None
    row["fid"] = s.get("fid")
    return row


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
        raise FileNotFoundError(f"reported-numbers file {p} does not exist")
    df = pd.read_csv(p, comment="#", dtype=str, keep_default_na=False)
    missing = [c for c in REPORTED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{p}: missing column(s) {', '.join(missing)} (need {', '.join(REPORTED_COLUMNS)} + metrics)")
    metric_cols = [c for c in df.columns if c not in REPORTED_COLUMNS]
    for c in metric_cols:
        try:
            higher_is_better(c)
        except KeyError:
            raise ValueError(f"{p}: column {c!r} is not a known metric") from None
        vals = df[c].str.strip()
        try:
            df[c] = [float(v) if v else np.nan for v in vals]
        except ValueError:
            raise ValueError(f"{p}: column {c!r} holds a value that is not a number") from None
    df["source"] = REPORTED_NOTE
    return df


def _sort(df: pd.DataFrame, primary: str) -> pd.DataFrame:
    if primary not in df.columns or df.empty:
        return df
    return df.sort_values(primary, ascending=not higher_is_better(primary), na_position="last", kind="stable")


def build_leaderboard(
    results: str | os.PathLike,
    out: str | os.PathLike,
    *,
    reported: str | os.PathLike | None = None,
    primary: str = "ssim_hole",
) -> list[Path]:
    """Aggregate results into ``out``: CSV, Markdown, HTML, per-mask-type chart, sample grid.

    Args:
        results: results root.
        out: output folder (created).
        reported: paper-numbers CSV; ``None`` uses ``out/reported.csv`` when it exists.
        primary: the metric rows are sorted by (direction from ``higher_is_better``).

    Returns:
        The paths written.

    Raises:
        FileNotFoundError: ``results`` (or an explicit ``reported``) does not exist.
        KeyError: ``primary`` is not a known metric.
        ValueError: malformed reported file.
    """
    higher_is_better(primary)  # raises KeyError for unknown names
    out = Path(out)
    measured = collect_results(results)
    rep_path = Path(reported) if reported is not None else out / "reported.csv"
    rep = load_reported(rep_path) if (reported is not None or rep_path.is_file()) else pd.DataFrame()
    measured = _sort(measured, primary)
    if not measured.empty:
        measured = pd.concat([_sort(g, primary) for _, g in measured.groupby(["track", "dataset"], sort=True)])
        measured.insert(0, "rank", measured.groupby(["track", "dataset"]).cumcount() + 1)
    rep = _sort(rep, primary)
    table = pd.concat([measured, rep], ignore_index=True) if not rep.empty else measured.reset_index(drop=True)
    cols = ["rank", "method", "track", "dataset", "n", "n_failed"] + [c for c in _SHOWN if c in table.columns]
    cols += ["identity_model", "source", "paper", "protocol"]
    cols = [c for c in cols if c in table.columns]
    table = table[cols] if not table.empty else pd.DataFrame(columns=["method", primary])
    written = []
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "leaderboard.csv", table.to_csv(index=False))
    written.append(out / "leaderboard.csv")
    atomic_write_text(out / "leaderboard.md", _markdown(table, primary))
    written.append(out / "leaderboard.md")
    chart = _mask_type_chart(measured, primary, out / "by_mask_type.png")
    grid = _sample_grid(measured, out / "samples.png")
    written += [p for p in (chart, grid) if p is not None]
    atomic_write_text(out / "index.html", _html(table, primary, chart, grid))
    written.append(out / "index.html")
    return written


def _fmt(v: Any, col: str = "") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        if col in ("rank", "n", "n_failed"):
            return str(int(v))
        two = col == "fid" or col.removeprefix("raw_").startswith("psnr")  # dB and FID: 2 decimals
        return f"{v:.2f}" if two else f"{v:.4f}"
    return str(v)


def _arrow(c: str) -> str:
    try:
        return " ↑" if higher_is_better(c) else " ↓"
    except KeyError:
        return ""


def _markdown(table: pd.DataFrame, primary: str) -> str:
    cols = list(table.columns)
    lines = [
        "# maskbench leaderboard",
        "",
        f"Sorted by `{primary}`{_arrow(primary)} within each track and dataset. "
        f"Rows marked *{REPORTED_NOTE}* are copied from papers and not comparable.",
        "",
        "| " + " | ".join(c + _arrow(c) for c in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c], c).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


_SORT_JS = """
document.querySelectorAll('th').forEach((th, i) => th.addEventListener('click', () => {
  const tb = th.closest('table').tBodies[0], rows = [...tb.rows];
  const dir = th.dataset.dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
  const key = r => { const t = r.cells[i].textContent, x = parseFloat(t); return isNaN(x) ? t : x; };
  rows.sort((a, b) => { const x = key(a), y = key(b); const c = x < y ? -1 : x > y ? 1 : 0; return dir === 'asc' ? c : -c; });
  rows.forEach(r => tb.appendChild(r));
}));
"""


def _html(table: pd.DataFrame, primary: str, chart: Path | None, grid: Path | None) -> str:
    cols = list(table.columns)
    head = "".join(f"<th title='click to sort'>{html.escape(c + _arrow(c))}</th>" for c in cols)
    body = []
    for _, r in table.iterrows():
        cls = " class='reported'" if r.get("source") == REPORTED_NOTE else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(_fmt(r[c], c))}</td>" for c in cols) + "</tr>")
    imgs = "".join(
        f"<h2>{t}</h2><img src='{p.name}' alt='{t}'>" for t, p in (("By mask type", chart), ("Sample outputs", grid)) if p
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>maskbench leaderboard</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{cursor:pointer;background:#eee}}
tr.reported{{font-style:italic;color:#777}}img{{max-width:100%}}</style></head>
<body><h1>maskbench leaderboard</h1>
<p>Sorted by <code>{html.escape(primary)}</code>{_arrow(primary)}; click a header to sort.
Grey rows: {REPORTED_NOTE} (not comparable).</p>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
{imgs}
<script>{_SORT_JS}</script>
</body></html>
"""


def _mask_type_chart(measured: pd.DataFrame, primary: str, path: Path) -> Path | None:
    if measured.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data: dict[str, dict[str, float]] = {}
    for _, r in measured.iterrows():
        s = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        for t, block in s.get("by_mask_type", {}).items():
            m = block["metrics"].get(primary)
            if m and m["mean"] is not None:
                data.setdefault(r["method"], {})[t] = m["mean"]
    if not data:
        return None
    types = sorted({t for d in data.values() for t in d})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(types) * max(1, len(data)) / 2), 4))
    w = 0.8 / len(data)
    for i, (method, d) in enumerate(sorted(data.items())):
        ax.bar(np.arange(len(types)) + i * w, [d.get(t, np.nan) for t in types], w, label=method)
    ax.set_xticks(np.arange(len(types)) + 0.4 - w / 2, types)
    ax.set_ylabel(primary + _arrow(primary))
    ax.set_title(f"{primary} by mask type")
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _sample_grid(measured: pd.DataFrame, path: Path, k: int = 4, cell: int = 128) -> Path | None:
    """Rows = methods with saved outputs; columns = the first ``k`` sample ids (same ids for all)."""
    import cv2

    from .io import read_png

    runs = [(r["method"], Path(r["run_dir"]) / "outputs") for _, r in measured.iterrows()]
    runs = [(m, d) for m, d in runs if d.is_dir() and any(d.iterdir())]
    if not runs:
        return None
    ids = sorted(p.stem for p in runs[0][1].glob("*.png"))[:k]
    label_w = 140
    grid = np.full((cell * len(runs), label_w + cell * len(ids), 3), 255, np.uint8)
    for i, (method, d) in enumerate(runs):
        cv2.putText(grid, method[:16], (4, i * cell + cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        for j, sid in enumerate(ids):
            p = d / f"{sid}.png"
            if p.is_file() and _inside(p, d):  # a copied results folder may hold links to elsewhere
                im = cv2.resize(read_png(p), (cell, cell), interpolation=cv2.INTER_AREA)
                grid[i * cell : (i + 1) * cell, label_w + j * cell : label_w + (j + 1) * cell] = im
    from .io import write_png

    write_png(path, grid)
    return path
