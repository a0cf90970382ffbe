"""The ``maskbench`` command line. Thin: parse arguments, call the library, report.

Every library error a user can cause (missing folder, unknown name, offline hub) is turned into one
readable line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import functools
import sys

import click

from . import __version__


class UserError(click.ClickException):
    """An error caused by the command's input: printed as one line, exit status 2."""

    exit_code = 2


def user_errors(*exc_types: type[BaseException]):
    """Decorator: turn the given exception types into :class:`UserError` (one line, exit 2)."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except exc_types as e:
                raise UserError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None

        return wrapper

    return deco


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="maskbench")
def main() -> None:
    """Masked-Faces dataset synthesis and a benchmark for face-mask removal."""


# --- benchmark commands (predictors registry, evaluation, leaderboard) -------------------------------


@main.command("methods")
def methods_cmd() -> None:
    """List registered mask-removal methods: track, input size, device needs, weights status."""
    from .predictors import list_methods, method_info, registry_warnings

    rows = [method_info(n) for n in list_methods()]
    head = ("name", "track", "input", "device", "weights", "source", "description")
    table = [
        (
            r.name,
            r.track,
            str(r.input_size or "any"),
            "needs gpu" if r.needs_gpu else "cpu ok",
            r.weights,
            r.source,
            r.error or r.description,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head[:-1])]
    for t in [head, *table]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(t[:-1], widths)) + "  " + t[-1])
    for w in registry_warnings():
        click.echo(f"warning: {w}", err=True)


def _evaluate_errors():
    from .dataset import DatasetFormatError
    from .faces import ModelNotFoundError
    from .predictors import RegistryError, UnknownMethodError

    return (DatasetFormatError, ModelNotFoundError, RegistryError, UnknownMethodError, ValueError, OSError)


@main.command("evaluate")
@click.option("--method", required=True, help="Registered method name (see `maskbench methods`).")
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Dataset folder (maskbench synth output).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "train"]))
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate the first N samples only.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--save-outputs", is_flag=True, help="Also write the method's outputs as PNGs.")
@click.option("--out", default="results", show_default=True, type=click.Path(file_okay=False), help="Results root.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--no-fid", is_flag=True, help="Skip FID.")
@click.option("--no-identity", is_flag=True, help="Skip identity cosine.")
@click.option("--identity-model", default="auto", show_default=True, type=click.Choice(["auto", "dlib", "arcface"]))
@click.option("--fid-weights", default=None, type=click.Path(dir_okay=False), help="Inception state-dict file.")
def evaluate_cmd(method, data, split, limit, device, batch_size, save_outputs, out, seed, no_fid, no_identity,
                 identity_model, fid_weights) -> None:
    """Run METHOD on a dataset split and write per-image scores, a summary and a manifest."""
    from .evaluate import EvalConfig, evaluate

    cfg = EvalConfig(
        method=method, data=data, split=split, limit=limit, device=device, batch_size=batch_size,
        save_outputs=save_outputs, out=out, seed=seed, fid=not no_fid, identity=not no_identity,
        identity_model=identity_model, fid_weights=fid_weights,
    )
    try:
        res = evaluate(cfg, progress=_progress_printer())
    except _evaluate_errors() as e:
        raise UserError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    s = res.summary
    click.echo(("reused " if res.reused else "wrote ") + str(res.run_dir))
    for name in ("l1", "psnr", "ssim", "l1_hole", "psnr_hole", "ssim_hole", "identity_cosine", "mask_iou", "mask_f1"):
        m = s["metrics"].get(name)
        if m and m["mean"] is not None:
            click.echo(f"  {name:16s} {m['mean']:.4f}  [{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]  n={m['n']}")
    if s.get("fid") is not None:
        click.echo(f"  {'fid':16s} {s['fid']:.3f}  n={s['fid_n']}")
    if res.failures:
        click.echo(f"{len(res.failures)} of {s['n']} images failed, e.g. {res.failures[0]['id']}: {res.failures[0]['error']}", err=True)
        if len(res.failures) == s["n"]:
            sys.exit(1)


def _progress_printer():
    state = {"last": 0.0}

    def progress(done: int, total: int) -> None:
        import time

        now = time.monotonic()
        if done == total or now - state["last"] > 2:
            state["last"] = now
            click.echo(f"  {done}/{total} images", err=True)

    return progress


@main.command("leaderboard")
@click.option("--results", default="results", show_default=True, type=click.Path(file_okay=False), help="Results root.")
@click.option("--out", default="leaderboard", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--reported", default=None, type=click.Path(dir_okay=False),
              help="Paper-reported numbers CSV [default: OUT/reported.csv when present].")
@click.option("--primary", default="ssim_hole", show_default=True, help="Metric to sort by.")
@user_errors(FileNotFoundError, KeyError, ValueError)
def leaderboard_cmd(results, out, reported, primary) -> None:
    """Aggregate results folders into leaderboard.csv, leaderboard.md and index.html."""
    from .leaderboard import build_leaderboard

    paths = build_leaderboard(results, out, reported=reported, primary=primary)
    for p in paths:
        click.echo(f"wrote {p}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
