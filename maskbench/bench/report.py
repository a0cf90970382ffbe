"""Render the leaderboard: Markdown and HTML tables (pandas ``to_markdown`` / ``to_html``), the
per-mask-type chart and the sample grid. :mod:`maskbench.bench.leaderboard` computes, this module draws.

Tables come one per (track, dataset) section: rank, method, failures, the metrics in registry order
with their 95 % intervals, marks for the rows not significantly different from the best, and a link to
each run's manifest (HTML). Below them, the primary metric by mask type and by hole-area bucket, then the
in-the-wild tables; superseded builds of a dataset (see :func:`maskbench.bench.leaderboard.superseded_builds`)
come last, under their own heading.
"""

from __future__ import annotations

import html
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.io import atomic_write_bytes, read_png, write_png
from ..core.paths import expand_recorded
from ..measures.metrics import METRICS, format_value, higher_is_better
from ..measures.stats import HOLE_BUCKET_LABELS

__all__ = [
    "breakdown_frame", "breakdown_tables", "render_markdown", "render_html", "mask_type_chart", "sample_grid",
    "wild_sections", "SUPERSEDED_NOTE",
]

_REPORTED_NOTE = "reported in paper, other protocol"
#: Above the superseded builds' tables (:func:`maskbench.bench.leaderboard.superseded_builds`).
SUPERSEDED_NOTE = ("Older builds of a split shown above: the same faces, synthesized again (same folder name, "
                   "split and sample ids, another fingerprint), so their rows are not ranked against the current "
                   "build's. Kept for the runs made only on them; each table is ranked within itself.")


def row_label(r: pd.Series) -> str:
    """The method name plus its options (``region-attentive [variant=single-scale]``), so rows of one
    method with different options stay apart in tables, charts and sample grids."""
    name = str(r["method"])
    args = r.get("method_args")
    if isinstance(args, str) and args not in ("", "[]"):
        try:
            pairs = json.loads(args)
            args = ", ".join(f"{k}={v}" for k, v in pairs)
        except (ValueError, TypeError):
            pass
        name += f" [{args}]"
    return name


def _arrow(c: str) -> str:
    try:
        return " ↑" if higher_is_better(c) else " ↓"
    except KeyError:
        return ""


def _header(m: str) -> str:
    unit = METRICS[m].unit
    return m + (f" ({unit})" if unit else "") + _arrow(m)


def _sections(table: pd.DataFrame, superseded: bool = False):
    """``(title, rows)`` per (track, dataset) of measured + ceiling rows, then the reported rows; with
    ``superseded``, only the sections of superseded builds (``superseded_by`` set), titled with their
    successor, and no reported rows."""
    src = table["source"] if "source" in table.columns else pd.Series("measured", index=table.index)
    newer = table["superseded_by"].fillna("").astype(str) if "superseded_by" in table.columns \
        else pd.Series("", index=table.index)
    ours = table[(src != _REPORTED_NOTE) & ((newer != "") == superseded)]
    keys = ["dataset", "track"] if superseded else ["track", "dataset"]  # superseded: one build's tables together
    for key, g in ours.groupby(keys, sort=True):
        dataset, track = key if superseded else key[::-1]
        measured = g[g["source"] == "measured"]
        rec = ", ".join(sorted({str(x) for x in measured.get("identity_model", pd.Series()).dropna()})) or "none"
        n = int(measured["n"].max()) if len(measured) else int(g["n"].max())
        title = f"{dataset} — {track} track — {n} faces — identity recognizer: {rec}"
        if superseded:
            title += f" — superseded by {newer[g.index[0]]}"
        yield title, g
    if superseded:
        return
    rep = table[src == _REPORTED_NOTE]
    if len(rep):
        yield f"Reported in papers ({_REPORTED_NOTE}; not comparable, not ranked)", rep


def _metric_cols(g: pd.DataFrame) -> list[str]:
    return [m for m in METRICS if m in g.columns and g[m].notna().any()]


def _cell(r: pd.Series, m: str, with_ci: bool) -> tuple[str, str, bool]:
    """(mean text, interval text, marked) of one metric cell."""
    v = r.get(m)
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "", "", False
    text = format_value(m, v)
    sd = r.get(f"{m}_seed_sd")
    if sd is not None and not (isinstance(sd, float) and np.isnan(sd)):
        text += f" ±{format_value(m, sd)}"
    lo, hi = r.get(f"{m}_lo"), r.get(f"{m}_hi")
    ci = ""
    if with_ci and lo is not None and hi is not None and not (np.isnan(lo) or np.isnan(hi)):
        ci = f"[{format_value(m, lo)}, {format_value(m, hi)}]"
    return text, ci, bool(r.get(f"{m}_best") is True or r.get(f"{m}_best") == 1.0)


def _nan_count(r: pd.Series) -> int:
    """A row's count of scored images with a due score missing (0 for rows without one)."""
    v = r.get("nan_images")
    return 0 if v is None or pd.isna(v) else int(v)


def _section_frame(g: pd.DataFrame, markdown: bool, link=None) -> pd.DataFrame:
    metrics = _metric_cols(g)
    show_seeds = "seeds" in g.columns and (g["seeds"].fillna(1) > 1).any()
    show_training = "training" in g.columns and g["training"].fillna("").astype(bool).any()
    recs = []
    for _, r in g.iterrows():
        rank = r.get("rank")
        rec = {"rank": "" if rank is None or pd.isna(rank) else str(int(rank))}
        name = row_label(r)
        if r.get("source") == _REPORTED_NOTE:
            name += f" ({r.get('paper', '')}; {r.get('protocol', '')})"
        else:
            if r.get("complete") is False or r.get("complete") == 0:
                name += " (incomplete: failed images dropped)"
            if _nan_count(r):
                name += f" (NaN scores on {_nan_count(r)} images: not ranked)"
        rec["method"] = name if link is None else link(r, name)
        if r.get("source") == "measured":
            rec["failed"] = f"{int(r.get('n_failed') or 0)}/{int(r['n'])}"
            if _nan_count(r):
                rec["failed"] += f" + {_nan_count(r)} NaN"
        else:
            rec["failed"] = ""
        if show_seeds:
            rec["seeds"] = "" if pd.isna(r.get("seeds")) else str(int(r["seeds"]))
        if show_training:
            t = r.get("training")
            rec["training"] = "" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t)
        for m in metrics:
            text, ci, marked = _cell(r, m, with_ci=True)
            if markdown:
                text = f"**{text}**" if marked and text else text
                rec[_header(m)] = f"{text} {ci}".strip()
            else:
                cls = " class='best'" if marked else ""
                ci_html = f"<br><small>{html.escape(ci)}</small>" if ci else ""
                rec[_header(m)] = f"<span{cls}>{html.escape(text)}</span>{ci_html}"
        recs.append(rec)
    return pd.DataFrame(recs)


#: The in-the-wild columns: metric, header, scale of the shown number, format.
_WILD_COLUMNS = (("fid", "FID ↓", 1.0, "{:.1f}"), ("kid", "KID ×10³ ↓", 1000.0, "{:.2f}"),
                 ("kid_gap_closed", "KID gap closed ↑", 1.0, "{:.2f}"),
                 ("mask_left_behind", "mask left behind ↓", 1.0, "{:.3f}"))
_WILD_NOTE = ("FID and KID (Binkowski et al. 2018, unbiased, cubic polynomial kernel) of the restored, aligned "
              "crops against the reference crops; under each, its 95 % interval (bootstrap over the restored "
              "images, reference fixed). Mask left behind: share of outputs in which the segmenter (the blind "
              "method itself, or the one the masks came from) still marks more than {thr} of the crop, with its "
              "Wilson interval. The floor rows score the unrestored inputs (their mask left behind is the "
              "segmenter's detection rate); the reference rows give how often the segmenter flags the unmasked "
              "reference faces (its false-alarm rate): mask left behind means something only where that is low. "
              "Where a ceiling is held out of the reference (real unmasked faces scored like outputs), KID gap "
              "closed = (floor - method) / (floor - ceiling), with a paired bootstrap interval. Ranked by KID; "
              "failed counts photos with no face and images a method failed on (scored as the input).")


def wild_sections(wild: pd.DataFrame):
    """``(title, rows)`` per (photos, reference) of the in-the-wild table (:func:`maskbench.bench.leaderboard.wild_rows`)."""
    if wild is None or wild.empty:
        return
    for _, g in wild.groupby(["data_fp", "reference_fp"], sort=True):
        r = g.iloc[0]
        yield (f"In the wild: {r['data']} — {int(r['n_faces'])} of {int(r['n_photos'])} photos with a face — "
               f"reference {r['reference']} ({int(r['n_reference'])} faces)"), g


def _wild_label(r: pd.Series) -> str:
    name = row_label(r)
    source = row_label(pd.Series({"method": r.get("mask_source"), "method_args": r.get("mask_source_args")}))
    if r.get("source") == "ceiling":
        return name
    if r.get("source") in ("floor", "reference"):
        return f"{name} (segmenter {source})"
    if r.get("track") == "given-mask":
        name += f" ← masks of {source}"
    return name


def _wild_frame(g: pd.DataFrame, markdown: bool, link=None) -> pd.DataFrame:
    recs = []
    for _, r in g.iterrows():
        rank = r.get("rank")
        name = _wild_label(r)
        rec = {"rank": "" if rank is None or pd.isna(rank) else str(int(rank)),
               "method": name if link is None else link(r, name),
               "failed": f"{int(r['n_failed'])}/{int(r['n_photos'])}" if r.get("source") == "measured" else ""}
        for m, header, scale, fmt in _WILD_COLUMNS:
            v, lo, hi = r.get(m), r.get(f"{m}_lo"), r.get(f"{m}_hi")
            if v is None or pd.isna(v):
                rec[header] = ""
                continue
            text = fmt.format(v * scale)
            ci = "" if lo is None or pd.isna(lo) else f"[{fmt.format(lo * scale)}, {fmt.format(hi * scale)}]"
            rec[header] = f"{text} {ci}".strip() if markdown else \
                f"{html.escape(text)}" + (f"<br><small>{html.escape(ci)}</small>" if ci else "")
        t = r.get("training")
        rec["training"] = "" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t)
        recs.append(rec)
    frame = pd.DataFrame(recs)
    if not frame["training"].astype(bool).any():
        frame = frame.drop(columns="training")
    closed = _WILD_COLUMNS[2][1]
    if not frame[closed].astype(bool).any():  # a section without a ceiling has no gap to close
        frame = frame.drop(columns=closed)
    return frame


def _wild_note(g: pd.DataFrame) -> str:
    thr = g["left_threshold"].dropna()
    return _WILD_NOTE.format(thr=f"{float(thr.iloc[0]):.0%}" if len(thr) else "the threshold")


def breakdown_tables(measured: pd.DataFrame, primary: str) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """Per (track, dataset): ``(title, by mask type, by hole bucket)`` frames of the primary metric,
    methods as rows (a row with NaN scores says so), groups as columns, cells ``"mean (n)"``."""
    out = []
    if measured.empty:
        return out
    for (track, dataset), g in measured.groupby(["track", "dataset"], sort=True):
        frames = []
        for key in ("by_mask_type", "by_hole_bucket"):
            data = {}
            for _, r in g.iterrows():
                label = row_label(r) + (f" (NaN scores on {_nan_count(r)} images)" if _nan_count(r) else "")
                data[label] = {k: f"{format_value(primary, v[0])} ({v[1]})" for k, v in
                               breakdown_frame(r, key, primary).items() if v[0] is not None}
            frames.append(pd.DataFrame(data).T.fillna(""))
        out.append((f"{dataset} — {track} track", frames[0], frames[1]))
    return out


def render_markdown(table: pd.DataFrame, breakdowns, primary: str, meta: dict[str, str],
                    wild: pd.DataFrame | None = None) -> str:
    """The whole ``leaderboard.md``; ``wild`` (:func:`maskbench.bench.leaderboard.wild_rows`) adds the in-the-wild
    sections at the end."""
    lines = [
        "# maskbench leaderboard",
        "",
        f"Generated {meta['date']} by maskbench {meta['version']} (commit {meta['commit']}). "
        f"Ranked by `{primary}`{_arrow(primary)} within each track and dataset; each mean is followed by its "
        "95 % bootstrap interval; **bold**: the best row and the rows not significantly different from it "
        "(Wilcoxon signed-rank on the images both scored, p >= 0.05). A failed image is scored as the "
        "masked input; `failed` counts them. The ceiling row scores the original photos the same way.",
        "",
    ]
    for title, g in _sections(table):
        lines += [f"## {title}", "", _section_frame(g, markdown=True).to_markdown(index=False), ""]
    for title, by_type, by_bucket in breakdowns:
        for what, f in (("mask type", by_type), ("hole area (share of the face box)", by_bucket)):
            if not f.empty:
                lines += [f"### {title}: `{primary}` by {what} (n)", "", f.to_markdown(), ""]
    for title, g in wild_sections(wild):
        lines += [f"## {title}", "", _wild_note(g), "", _wild_frame(g, markdown=True).to_markdown(index=False), ""]
    old = list(_sections(table, superseded=True))
    if old:
        lines += ["## Superseded builds", "", SUPERSEDED_NOTE, ""]
        for title, g in old:
            lines += [f"### {title}", "", _section_frame(g, markdown=True).to_markdown(index=False), ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;margin:16px;max-width:1368px}
table{border-collapse:collapse;font-size:13px;margin-bottom:1em}
th,td{border:1px solid #ccc;padding:3px 5px;text-align:right;vertical-align:top}
th{cursor:pointer;background:#eee;font-weight:600}td:nth-child(2),th:nth-child(2){text-align:left}
small{color:#666}.best{font-weight:700;background:#dff0d8;padding:0 2px}
img{max-width:100%}h2{font-size:17px;margin-top:1.5em}h3{font-size:15px}"""

_SORT_JS = """
document.querySelectorAll('th').forEach((th, i) => th.addEventListener('click', () => {
  const tb = th.closest('table').tBodies[0], rows = [...tb.rows];
  const dir = th.dataset.dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
  const key = r => { const t = r.cells[i].textContent, x = parseFloat(t); return isNaN(x) ? t : x; };
  rows.sort((a, b) => { const x = key(a), y = key(b); const c = x < y ? -1 : x > y ? 1 : 0; return dir === 'asc' ? c : -c; });
  rows.forEach(r => tb.appendChild(r));
}));
"""


def render_html(table, breakdowns, primary: str, meta: dict[str, str], out: Path, chart, grid,
                wild: pd.DataFrame | None = None) -> str:
    """The whole ``index.html``: fits a 1400 px window; each measured row links to its run manifest. ``wild``
    (:func:`maskbench.bench.leaderboard.wild_rows`) adds the in-the-wild tables, each followed by its runs'
    contact sheets (inputs with the mask found, outputs, what the segmenter still finds)."""

    def link(r, name):
        if r.get("source") != "measured" or not r.get("run_dir"):
            return html.escape(name)
        rel = os.path.relpath(Path(r["run_dir"]) / "manifest.json", out)
        return f"<a href='{html.escape(rel)}' title='run manifest'>{html.escape(name)}</a>"

    parts = [f"<h1>maskbench leaderboard</h1><p>Generated {html.escape(meta['date'])} by maskbench "
             f"{html.escape(meta['version'])}, commit <code>{html.escape(meta['commit'])}</code>. Ranked by "
             f"<code>{html.escape(primary)}</code>{_arrow(primary)} within each track and dataset. Under each "
             "mean: its 95 % bootstrap interval. <span class='best'>Shaded</span>: the best row and the rows not "
             "significantly different from it (Wilcoxon signed-rank, p &ge; 0.05). Failed images are scored as "
             "the masked input (<i>failed</i> column). Click a method for its run manifest, a header to sort.</p>"]
    for title, g in _sections(table):
        frame = _section_frame(g, markdown=False, link=link)
        parts.append(f"<h2>{html.escape(title)}</h2>" + frame.to_html(index=False, escape=False, border=0))
    for title, by_type, by_bucket in breakdowns:
        for what, f in (("mask type", by_type), ("hole area, share of the face box", by_bucket)):
            if not f.empty:
                parts.append(f"<h3>{html.escape(title)}: {html.escape(primary)} by {what} (n)</h3>" + f.to_html(border=0))
    for t, p in (("By mask type (95 % intervals)", chart), ("Samples: input | methods | ground truth", grid)):
        if p is not None:
            parts.append(f"<h2>{t}</h2><img src='{html.escape(p.name)}' alt='{t}'>")
    for title, g in wild_sections(wild):
        frame = _wild_frame(g, markdown=False, link=link)
        parts.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(_wild_note(g))}</p>"
                     + frame.to_html(index=False, escape=False, border=0))
        for _, r in g[g["source"] == "measured"].iterrows():
            if r.get("sheet"):
                rel = html.escape(os.path.relpath(r["sheet"], out))
                label = html.escape(_wild_label(r))
                parts.append(f"<h3>Contact sheet: {label}</h3><a href='{rel}'><img src='{rel}' "
                             f"alt='contact sheet of {label}'></a>")
    old = list(_sections(table, superseded=True))
    if old:
        parts.append(f"<h2>Superseded builds</h2><p>{html.escape(SUPERSEDED_NOTE)}</p>")
        for title, g in old:
            frame = _section_frame(g, markdown=False, link=link)
            parts.append(f"<h3>{html.escape(title)}</h3>" + frame.to_html(index=False, escape=False, border=0))
    body = "\n".join(parts)
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>maskbench leaderboard</title>"
            f"<style>{_CSS}</style></head>\n<body>\n{body}\n<script>{_SORT_JS}</script>\n</body></html>\n")


def mask_type_chart(measured: pd.DataFrame, primary: str, path: Path) -> Path | None:
    """Bars of ``primary`` per mask type and method with 95 % intervals, one panel per (track, dataset),
    legend outside the axes. ``None`` when there is nothing to draw."""
    if measured.empty:
        return None
    panels = []
    for (track, dataset), g in measured.groupby(["track", "dataset"], sort=True):
        data = {row_label(r): breakdown_frame(r, "by_mask_type", primary) for _, r in g.iterrows()}
        data = {k: v for k, v in data.items() if v}
        if data:
            panels.append((f"{dataset} ({track})", data))
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.6 * len(panels)), squeeze=False)
    for ax, (title, data) in zip(axes[:, 0], panels):
        types = sorted({t for d in data.values() for t in d})
        w = 0.8 / len(data)
        for i, (method, d) in enumerate(data.items()):
            means = np.array([d[t][0] if t in d and d[t][0] is not None else np.nan for t in types], float)
            lo = np.array([d[t][2][0] if t in d and d[t][2][0] is not None else np.nan for t in types], float)
            hi = np.array([d[t][2][1] if t in d and d[t][2][1] is not None else np.nan for t in types], float)
            ax.bar(np.arange(len(types)) + (i - (len(data) - 1) / 2) * w, means, w, label=method,
                   yerr=np.vstack([means - lo, hi - means]), capsize=2)
        ax.set_xticks(np.arange(len(types)), types)
        ax.set_ylabel(primary + _arrow(primary))
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def sample_grid(measured: pd.DataFrame, path: Path, k: int = 4, cell: int = 128) -> Path | None:
    """Rows = the first ``k`` sample ids that every method with saved outputs has (on the first dataset
    that has any); columns = masked input | each method | ground truth; labelled with ids and names.
    ``None`` when no run saved outputs or the dataset folder is not on this machine."""
    import cv2

    from ..data.dataset import MaskedFaces

    if measured.empty:
        return None
    for _, g in measured.groupby(["track", "dataset"], sort=True):
        runs = [(row_label(r), Path(r.get("outputs_dir") or ""), expand_recorded(r.get("dataset_path")), r.get("split"))
                for _, r in g.iterrows() if r.get("outputs_dir")]
        runs = [x for x in runs if x[1].is_dir() and any(x[1].glob("*.png"))]
        if not runs or not runs[0][2] or not Path(runs[0][2]).is_dir():
            continue
        # only files inside their run folder: a copied results folder may hold links to elsewhere
        ids = sorted(set.intersection(*[{p.stem for p in d.glob("*.png") if p.is_file()
                                          and p.resolve().is_relative_to(d.resolve())} for _, d, _, _ in runs]))[:k]
        try:
            ds = MaskedFaces(runs[0][2], runs[0][3] or "test")
        except ValueError:
            continue
        index = {str(rec["id"]): i for i, rec in enumerate(ds.records) if i not in ds.refused}
        ids = [i for i in ids if i in index]
        if not ids:
            continue
        cols = ["masked input"] + [m for m, _, _, _ in runs] + ["ground truth"]
        label_h, label_w = 22, 70
        grid = np.full((label_h + cell * len(ids), label_w + cell * len(cols), 3), 255, np.uint8)
        for c, name in enumerate(cols):
            cv2.putText(grid, name[:18], (label_w + c * cell + 3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        for r, sid in enumerate(ids):
            sample = ds[index[sid]]
            y = label_h + r * cell
            cv2.putText(grid, sid, (3, y + cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
            ims = [sample.masked] + [read_png(d / f"{sid}.png") for _, d, _, _ in runs] + [sample.original]
            for c, im in enumerate(ims):
                grid[y : y + cell, label_w + c * cell : label_w + (c + 1) * cell] = cv2.resize(
                    im, (cell, cell), interpolation=cv2.INTER_AREA)
        write_png(path, grid)
        return path
    return None


def breakdown_frame(row: pd.Series, key: str, primary: str) -> dict[str, tuple[float | None, int, list]]:
    """``{group: (mean of primary, n, [ci low, ci high])}`` for a row's run, by ``key`` (``"by_mask_type"`` or
    ``"by_hole_bucket"``); an interval the summary lacks is ``[None, None]``."""
    p = Path(row["run_dir"]) / "summary.json"
    if not p.is_file():
        return {}
    s = json.loads(p.read_text())
    order = HOLE_BUCKET_LABELS if key == "by_hole_bucket" else sorted(s.get(key, {}))
    out = {}
    for g in order:
        block = s.get(key, {}).get(g)
        if block:
            m = block["metrics"].get(primary) or {}
            out[g] = (m.get("mean"), block["n"], m.get("ci95") or [None, None])
    return out
