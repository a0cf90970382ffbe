"""The ``maskbench`` command line. Thin: parse arguments, call the library, report.

Every library error a user can cause (missing folder, unknown name, offline hub) is turned into one
readable line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .core.cluster import ENGINES, RAY_INSTALL
from .core.errors import MaskbenchError, first_line
from .data.dataset import write_sample_sheet
from .data.format import MASK_TYPES
from .data.sources import resolve_source
from .data.synth import SynthConfig, synthesize
from .faces.identity import IDENTITY_MODELS


class UserError(click.ClickException):
    """An error caused by the command's input: printed as one line, exit status 2."""

    exit_code = 2


class MaskbenchGroup(click.Group):
    """The command group: a :class:`~maskbench.core.errors.MaskbenchError` (something the user can fix) and
    an operating-system error on a named file (missing, unreadable, disk full) become one line and exit
    status 2; any other exception is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MaskbenchError as e:
            raise UserError(first_line(e)) from None
        except OSError as e:
            if e.filename is None:
                raise
            raise UserError(f"{e.filename}: {e.strerror or first_line(e)}") from None


@click.group(cls=MaskbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="maskbench")
def main() -> None:
    """Masked-Faces dataset synthesis and a benchmark for face-mask removal."""


def _engine_options(command):
    """``--engine`` and ``--ray-address`` (``synth`` and ``evaluate``)."""
    command = click.option("--ray-address", default=None, metavar="auto|ray://HOST:PORT",
                           help="With --engine ray: a running Ray cluster (`ray start --head` makes one; auto: the "
                                "one this machine belongs to) [default: start a local Ray on this machine's cores]."
                           )(command)
    return click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                        help=f"Where the work runs: this machine's processes, or Ray actors (needs {RAY_INSTALL})."
                        )(command)


def _ray_engine(engine: str, address: str | None, actors: int | None = None):
    """The :class:`~maskbench.core.cluster.RayEngine` of ``--engine ray`` (None for the local engine)."""
    if engine != "ray":
        if address is not None:
            raise UserError("--ray-address needs --engine ray")
        return None
    from .core.cluster import RayEngine, import_ray

    import_ray()  # without Ray: one line saying how to install it, before anything is read
    return RayEngine(address=address, actors=actors)


@main.command()
@click.option("--src", default=None, help="celeba, ffhq, lfw, hf:<repo_id>, or a folder of images "
              "(default: a built-in demo photo).")
@click.option("--data-dir", type=click.Path(), default=None, help="Where celeba/ffhq/lfw live (their own layout).")
@click.option("--out", "out", type=click.Path(file_okay=False), default="masked-faces", show_default=True,
              help="Output dataset folder (re-running resumes).")
@click.option("--split", type=click.Choice(["train", "test", "all"]), default="all", show_default=True,
              help="Which output split to make (assigned by identity).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many source images.")
@click.option("--size", type=click.IntRange(32, 4096), default=256, show_default=True, help="Output side, pixels.")
@click.option("--align/--no-align", default=True, show_default=True, help="FFHQ-style aligned crop.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--mask-types", default=",".join(MASK_TYPES), show_default=True, help="Comma-separated subset.")
@click.option("--variants", type=click.IntRange(min=1), default=1, show_default=True, help="Samples per face.")
@click.option("--test-fraction", type=click.FloatRange(0, 1), default=None,
              help="Share of identities (or images) in the test split [default: 0.1; 1 for the built-in demo, so "
                   "that `maskbench evaluate` finds it].")
@click.option("--textures", type=click.Path(), default=None, help="Folder of texture photos to draw from.")
@click.option("--templates", "templates", default="mix", show_default=True,
              help="mix[:DIR] (photo and drawn templates, --photo-share photo), photo[:DIR] (masks keyed out of real "
                   "photos; DIR: a library from `maskbench templates harvest`, default the shipped one, research-only "
                   "licence) or procedural (drawn only: licence-clean, the committed leaderboard's build).")
@click.option("--photo-share", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="mix: share of photo templates per mask type.")
@click.option("--photo-texture-share", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Share of photo-template masks whose fabric is swapped for a texture (shading kept).")
@click.option("--photo-relight/--no-photo-relight", default=True, show_default=True,
              help="Divide out a photo template's own shading before the face's light is applied.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--num-shards", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--shard-index", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--hub-split", default="train", show_default=True, help="Split to read from an hf: source.")
@click.option("--progress/--no-progress", default=True)
@_engine_options
def synth(src, data_dir, out, split, limit, size, align, seed, mask_types, variants, test_fraction, textures,
          templates, photo_share, photo_texture_share, photo_relight, workers, num_shards, shard_index, hub_split,
          progress, engine, ray_address):
    """Build a Masked-Faces dataset: masked / original / mask PNG triples plus metadata."""
    if textures is not None and not Path(textures).is_dir():
        raise UserError(f"--textures {textures}: no such folder")
    if test_fraction is None:  # the demo photo is one person: all of it in the test split, which evaluate reads
        test_fraction = 1.0 if src in (None, "demo") else 0.1
    config = SynthConfig(size=size, align=align, seed=seed, variants=variants, test_fraction=test_fraction,
                         mask_types=tuple(t.strip() for t in mask_types.split(",") if t.strip()),
                         textures=str(Path(textures).resolve()) if textures else None,
                         templates=_templates_option(templates), photo_share=photo_share,
                         photo_texture_share=photo_texture_share, photo_relight=photo_relight)
    explicit = click.get_current_context().get_parameter_source("workers") != click.core.ParameterSource.DEFAULT
    ray = _ray_engine(engine, ray_address, actors=workers if explicit else None)  # actors: --workers, or every CPU
    source = resolve_source(src, data_dir, hub_split=hub_split)
    try:
        report = synthesize(source, out, config, split=split, limit=limit, workers=workers,
                            num_shards=num_shards, shard_index=shard_index, progress=progress,
                            engine=None if ray is None else _synth_engine(ray))
    finally:
        if ray is not None:
            ray.close()
    skipped = sum(report.skipped.values())
    click.echo(f"{report.out}: {report.found} inputs found, {report.planned} in this run: {report.faces} gave "
               f"{report.written} samples written, {skipped} inputs skipped, {report.resumed} already done "
               f"({report.faces_per_second:.1f} faces/s)")
    for reason, n in sorted(report.skipped.items()):
        click.echo(f"  skipped {n}: {reason}")
    t = report.totals
    click.echo(f"  dataset now: train {t.get('train', 0)}, test {t.get('test', 0)}, skipped {t.get('skipped', 0)} "
               f"(see {Path(out) / 'skipped.csv'})")


def _synth_engine(ray):
    from .data.synth_ray import RaySynthEngine

    return RaySynthEngine(ray)


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), default="sheet.png", show_default=True)
@click.option("--split", default="test", show_default=True)
@click.option("--per-type", type=click.IntRange(1, 50), default=6, show_default=True)
def sheet(folder, out, split, per_type):
    """Write a contact sheet of synthesized faces, one row per mask type."""
    n = write_sample_sheet(folder, out, split=split, per_type=per_type)
    click.echo(f"{out}: {n} samples")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--repo-id", default=None, help="Hub repository, user/name.")
@click.option("--private", is_flag=True, help="Create the repository private.")
@click.option("--to-disk", type=click.Path(file_okay=False), default=None,
              help="Write the files a push would send (parquet shards + card) here instead.")
def publish(folder, repo_id, private, to_disk):
    """Publish a dataset folder to the Hugging Face hub (or write what would be pushed)."""
    from .data.publish import build_hub_folder
    from .data.publish import publish as push

    if to_disk:
        dest = build_hub_folder(folder, to_disk)
        click.echo(f"{dest}: {len(list((dest / 'data').glob('*.parquet')))} parquet shards + README.md")
        return
    if not repo_id:
        raise UserError("--repo-id is required unless --to-disk is given")
    click.echo(push(folder, repo_id, private=private))


def _templates_option(value: str) -> str:
    """``--templates`` with a library folder made absolute (the dataset's manifest records it)."""
    kind, _, folder = value.partition(":")
    return f"{kind}:{Path(folder).expanduser().resolve()}" if folder else kind


@main.group("templates", invoke_without_command=True)
@click.option("--library", default=None,
              help="Summarise a photo-template library instead: photo (the shipped one) or photo:DIR.")
@click.option("--type", "mask_type", type=click.Choice(MASK_TYPES),
              help="Only templates of this mask type.")
@click.option("--list", "list_all", is_flag=True, help="List the templates, one line each (after the summary).")
@click.option("--sheet", type=click.Path(dir_okay=False), help="Also write a contact sheet PNG here.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many templates (listing and sheet).")
@click.option("--size", type=click.IntRange(min=32, max=512), default=128, show_default=True,
              help="Tile size of the contact sheet.")
@click.pass_context
def templates_cmd(ctx, library: str | None, mask_type: str | None, list_all: bool, sheet: str | None,
                  limit: int | None, size: int) -> None:
    """Summarise the mask template library (per type: templates, styles, straps, valves); --list for one line
    per template; optionally draw a contact sheet. `templates harvest` keys masks out of real photos."""
    from collections import Counter

    if ctx.invoked_subcommand is not None:
        return
    if library is not None:
        _photo_library_summary(library, mask_type, list_all, sheet, limit, size)
        return
    from .data.masks import load_templates, write_contact_sheet

    specs = load_templates()
    chosen = [t for t in specs if mask_type is None or t.mask_type == mask_type]

    def tally(items, field: str) -> str:
        counts = sorted(Counter(getattr(t, field) for t in items).items())
        return ", ".join(f"{k if k != 'none' else 'no ' + field} {n}" for k, n in counts)

    click.echo(f"{'type':<10}{'templates':>10}  styles | straps | valves")
    for t in MASK_TYPES:
        of_type = [x for x in chosen if x.mask_type == t]
        if of_type:
            click.echo(f"{t:<10}{len(of_type):>10}  {tally(of_type, 'style')} | {tally(of_type, 'straps')} | "
                       f"{tally(of_type, 'valve')}")
    click.echo(f"{'total':<10}{len(chosen):>10}" + ("" if mask_type is None else f"  (of {len(specs)})"))
    chosen = chosen[:limit]
    if list_all:
        click.echo("")
        for t in chosen:
            extra = f" valve={t.valve}" if t.valve != "none" else ""
            click.echo(f"{t.template_id:<16}{t.mask_type:<10}{t.style:<10}{t.anchors:<10}{t.straps:<12}{t.color}{extra}")
    else:
        click.echo("(--list: one line per template; --sheet FILE: draw them)")
    if sheet:
        write_contact_sheet(sheet, chosen, size=size)
        click.echo(f"wrote {sheet} ({len(chosen)} templates)")


def _photo_library_summary(spec: str, mask_type, list_all, sheet, limit, size) -> None:
    from .data.masks.photo import PhotoLibrary, resolve_photo_library
    from .harvest.library import write_library_sheet

    kind, _, folder = spec.partition(":")
    if kind != "photo":
        raise UserError(f"--library {spec}: expected photo or photo:DIR")
    lib = PhotoLibrary(resolve_photo_library(folder or None))
    chosen = [t for t in lib.templates if mask_type is None or t.mask_type == mask_type][:limit]
    click.echo(f"{lib.root}: {len(lib)} photo templates ({lib.card.get('licence')})")
    for t in MASK_TYPES:
        click.echo(f"{t:<10}{len(lib.by_type.get(t, [])):>10}")
    if list_all:
        for t in chosen:
            click.echo(f"{t.template_id:<22}{t.mask_type:<10}{t.source_file}  yaw {t.yaw:+.0f}  face {t.face_px:.0f} px")
    if sheet:
        write_library_sheet(lib, sheet, tile=size, templates=chosen)
        click.echo(f"wrote {sheet} ({len(chosen)} templates)")


@templates_cmd.command("harvest")
@click.argument("photos", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The library folder to write.")
@click.option("--types", "types_file", type=click.Path(dir_okay=False), required=True,
              help="CSV file,type[,usable]: each photo's mask type (none / unsure: rejected with that reason).")
@click.option("--split", "split_file", type=click.Path(dir_okay=False), default=None,
              help="Split file file,sha256,half: harvest only --half of it.")
@click.option("--half", default="harvest", show_default=True)
@click.option("--segmenter", type=click.Choice(["landmark-gan", "3dprior"]), default="landmark-gan", show_default=True)
@click.option("--matting", type=click.Choice(["closed-form", "none"]), default="closed-form", show_default=True,
              help="none: the segmentation itself as alpha (to measure what matting changes).")
@click.option("--licence", default="research use only (inherits the source photos' licence)", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N photos.")
@click.option("--force", is_flag=True, help="Replace an existing library at --out.")
@click.option("--device", default="cpu", show_default=True)
def harvest_cmd(photos, out, types_file, split_file, half, segmenter, matting, licence, limit, force, device) -> None:
    """Key masks out of photos of masked people into a photo-template library (layers, card, rejected.csv,
    sheet.jpg, rejected.jpg); see maskbench.harvest."""
    from .harvest.library import harvest

    report = harvest(photos, out, types=types_file, split=split_file, half=half, segmenter=segmenter, matting=matting,
                     device=device,
                     licence=licence, limit=limit, force=force, progress=True)
    for line in report.lines():
        click.echo(line)


@templates_cmd.command("check-harvest")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--segmenter", type=click.Choice(["landmark-gan", "3dprior"]), default="landmark-gan", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
def check_harvest_cmd(dataset, split, limit, segmenter, json_out) -> None:
    """Harvest a synthetic dataset's masked faces, where the hole is known: the matte's IoU with the true hole
    and the landmark error."""
    from .core.io import atomic_write_json
    from .harvest.check import check_on_dataset

    res = check_on_dataset(dataset, split=split, limit=limit, segmenter=segmenter, progress=True)
    for line in res["lines"]:
        click.echo(line)
    if json_out:
        atomic_write_json(json_out, {k: v for k, v in res.items() if k != "lines"})


@main.command("methods")
def methods_cmd() -> None:
    """List registered mask-removal methods: track, input size, device needs, weights status."""
    from .methods.predictors import list_methods, method_info, registry_warnings

    rows = [method_info(n) for n in list_methods()]
    head = ("name", "track", "input", "device", "weights", "training", "source", "description")
    table = [
        (
            r.name,
            r.track,
            str(r.input_size or "any"),
            "needs gpu" if r.needs_gpu else "cpu ok",
            r.weights if len(r.weights) < 40 else r.weights.split(":")[0],
            r.training or ("trainable" if r.trainable else "-"),
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


@main.command("train")
@click.option("--method", required=True, help="A trainable method (see `maskbench methods`).")
@click.option("--data", default=None, help="Masked-Faces folder (maskbench synth output) or hf:<repo_id>; its train "
              "split is used.")
@click.option("--synth-on-the-fly", "on_the_fly", is_flag=True,
              help="Draw a fresh mask on every face at every epoch (faces from --data, or from --src).")
@click.option("--src", default=None, help="With --synth-on-the-fly: a synthesis source (celeba, ffhq, a folder).")
@click.option("--data-dir", type=click.Path(), default=None, help="With --src: where the source lives.")
@click.option("--synth-templates", default="procedural", show_default=True,
              help="With --synth-on-the-fly: the masks' templates, as synth --templates (procedural, photo, mix).")
@click.option("--config", "config", default="small", show_default=True,
              help="A config name of the method (small, paper, ...) or a YAML file.")
@click.option("--size", type=click.IntRange(16, 1024), default=None, help="Training side in pixels.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimisation steps (may grow on --resume).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Adam learning rate.")
@click.option("--seed", type=int, default=None)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config key, e.g. model.width=8.")
@click.option("--attributes", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CelebA list_attr_celeba.txt, for methods that route by gender (landmark-gan; with "
                   "--set gender=male|female for its generators).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Run folder [default: runs/METHOD-CONFIG].")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many training faces.")
@click.option("--progress/--no-progress", default=True)
def train_cmd(method, data, on_the_fly, src, data_dir, synth_templates, config, size, steps, batch_size, lr, seed, sets, attributes,
              device, out, resume, limit, progress) -> None:
    """Train METHOD on a Masked-Faces dataset; writes log, sample grids, checkpoints and weights."""
    from .methods.launch import launch
    from .train.config import parse_override

    overrides = {k: v for k, v in {"size": size, "steps": steps, "batch_size": batch_size, "seed": seed,
                                   "optim.lr": lr, "attributes": attributes and str(Path(attributes).resolve())}.items()
                 if v is not None}
    overrides.update(dict(parse_override(t) for t in sets))
    res = launch(method, data=data, config=config, overrides=overrides, out=out, resume=resume, device=device,
                 on_the_fly=on_the_fly, src=src, data_dir=data_dir, limit=limit, progress=progress,
                 templates=_templates_option(synth_templates))
    click.echo(f"{res.run_dir}: {res.steps} steps" + (f", weights {res.weights}" if res.weights else ""))


@main.command("demo")
@click.argument("method")
@click.argument("image", required=False, default=None, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default="demo.png", show_default=True, type=click.Path(dir_okay=False),
              help="Figure (PNG, or JPEG by its suffix).")
@click.option("--seeds", default=4, show_default=True, type=click.IntRange(1, 16), help="Outputs with seeds 0..N-1.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--method-arg", "method_args", multiple=True, metavar="KEY=VALUE", help="A method option (repeatable).")
@click.option("--weights", default=None, type=click.Path(dir_okay=False),
              help="Weights file of a learned method (same as --method-arg weights=PATH).")
def demo_cmd(method, image, out, seeds, device, method_args, weights) -> None:
    """A figure of METHOD's outputs for one masked face IMAGE (default: the built-in demo face, scikit-image's
    astronaut with a surgical mask): seeds, how much they differ, and expression edits where the method has
    them (3dprior)."""
    from .bench.demo import variation_figure
    from .methods.predictors import parse_method_args, resolve_device

    margs = parse_method_args(method_args)
    if weights is not None:
        margs["weights"] = str(Path(weights).resolve())
    path = variation_figure(method, image, out, seeds=seeds, device=resolve_device(device), method_args=margs)
    click.echo(f"wrote {path}")


def _run_options(command):
    """The options ``evaluate`` and ``wild`` share: device, batch size, results root, seed, FID weights, the
    method's options and weights, progress bars."""
    options = [
        click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])),
        click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1)),
        click.option("--out", default="results", show_default=True, type=click.Path(file_okay=False),
                     help="Results root."),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--fid-weights", default=None, type=click.Path(dir_okay=False), help="Inception state-dict file."),
        click.option("--method-arg", "method_args", multiple=True, metavar="KEY=VALUE",
                     help="A method option (repeatable), e.g. radius=5; part of the results key."),
        click.option("--weights", default=None, type=click.Path(dir_okay=False),
                     help="Weights file of a learned method (same as --method-arg weights=PATH)."),
        click.option("--progress/--no-progress", default=True, help="Progress bars (rate and ETA) on stderr."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command("evaluate")
@click.option("--method", required=True, help="Registered method name (see `maskbench methods`).")
@click.option("--data", default=None, type=click.Path(file_okay=False),
              help="Dataset folder (maskbench synth output) [default: ./masked-faces, else a built-in demo set].")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "train"]))
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate the first N samples only.")
@click.option("--save-outputs", is_flag=True, help="Also write the method's outputs as PNGs.")
@click.option("--no-fid", is_flag=True, help="Skip FID.")
@click.option("--no-identity", is_flag=True, help="Skip the identity metrics.")
@click.option("--identity-model", default="sface", show_default=True, type=click.Choice(IDENTITY_MODELS),
              help="Face recognizer for the identity metrics.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Threads preparing batches (decode, predict, pixel metrics).")
@_run_options
@_engine_options
def evaluate_cmd(method, data, split, limit, device, batch_size, save_outputs, out, seed, no_fid, no_identity,
                 identity_model, fid_weights, workers, method_args, weights, progress, engine, ray_address) -> None:
    """Run METHOD on a dataset split and write per-image scores, a summary and a manifest.

    Real photos of masked faces (no ground truth) are scored by `maskbench wild`."""
    from .bench.evaluate import EvalConfig, evaluate
    from .bench.wild import WILD_PREFIX, is_wild
    from .measures.stats import summary_lines

    ray = _ray_engine(engine, ray_address)  # without Ray: one line before anything is read
    if is_wild(data):
        raise UserError(f"--data {data}: the in-the-wild track has its own command: maskbench wild --data "
                        f"{data[len(WILD_PREFIX):]} --reference DIR (see maskbench wild --help)")
    if data is None:
        from .bench.evaluate import default_data

        try:
            data, said = default_data(split)
        except MaskbenchError as e:
            raise UserError(f"no --data given and the demo set cannot be made: {first_line(e)}") from None
        click.echo(f"scoring {said}", err=True)
    cfg = EvalConfig(
        method=method, data=data, split=split, limit=limit, device=device, batch_size=batch_size,
        save_outputs=save_outputs, out=out, seed=seed, fid=not no_fid, identity=not no_identity,
        identity_model=identity_model, fid_weights=fid_weights, workers=workers,
        method_args=_method_args(method_args, weights),
    )
    try:
        if ray is not None:
            from .bench.evaluate_ray import RayEvalEngine

            res = evaluate(cfg, progress=progress, log=lambda line: click.echo(line, err=True),
                           engine=RayEvalEngine(ray))
        else:
            res = evaluate(cfg, progress=progress, log=lambda line: click.echo(line, err=True))
    finally:
        if ray is not None:
            ray.close()
    s = res.summary
    click.echo(("reused " if res.reused else "wrote ") + str(res.run_dir))
    for line in summary_lines(s):
        click.echo("  " + line)
    if res.failures:
        click.echo(f"{len(res.failures)} of {s['n']} images failed, e.g. {res.failures[0]['id']}: "
                   f"{res.failures[0]['error']} (a failure the method raised is scored as the masked input; an "
                   "unreadable sample is not scored)", err=True)
        if len(res.failures) == s["n"]:
            sys.exit(1)


@main.command("wild")
@click.option("--method", required=True, help="Registered method name (see `maskbench methods`).")
@click.option("--data", required=True, help="Real photos of masked faces: a folder or hf:<repo_id> (a wild: prefix "
              "is accepted).")
@click.option("--reference", required=True, help="Real unmasked faces (a folder or hf:<repo_id>) that FID and KID "
              "compare against.")
@click.option("--mask-from", "mask_from", default=None, help="The blind method whose predicted masks a given-mask "
              "method fills (required for one).")
@click.option("--mask-from-arg", "mask_from_args", multiple=True, metavar="KEY=VALUE",
              help="An option of the --mask-from method (repeatable), e.g. weights=PATH.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score the first N photos only.")
@click.option("--ceiling-share", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Hold this share of the --reference photos out as the ceiling (real unmasked faces scored like "
                   "outputs) and report each method's share of the floor-to-ceiling KID gap closed.")
@click.option("--half", type=click.Choice(["harvest", "measurement"]), default=None,
              help="Only the photos of this half of the split file (real-masked-dev; its harvest half gave the photo "
                   "templates) [default: every photo].")
@click.option("--split-file", type=click.Path(dir_okay=False), default=None,
              help="With --half: the split file [default: mask_templates/photo/real_masked_dev_split.csv].")
@click.option("--judge", "judges", multiple=True, metavar="METHOD[:KEY=VALUE,...]",
              help="Another segmenter that judges the mask left behind (repeatable), e.g. "
                   "3dprior:variant=procedural (the weights before retraining).")
@_run_options
def wild_cmd(method, data, reference, mask_from, mask_from_args, limit, ceiling_share, half, split_file, judges, device,
             batch_size, out, seed, fid_weights, method_args, weights, progress) -> None:
    """Run METHOD on real photos of masked faces (no ground truth): FID and KID against the --reference faces
    and the share of outputs that still show a mask, each with its 95 % interval (see maskbench.bench.wild)."""
    from .bench.wild import WILD_PREFIX, WildConfig, evaluate_wild, format_wild_summary, is_wild, parse_judge
    from .methods.predictors import parse_method_args

    cfg = WildConfig(method=method, data=data if is_wild(data) else WILD_PREFIX + data, reference=reference,
                     mask_from=mask_from, mask_from_args=tuple(sorted(parse_method_args(mask_from_args).items())),
                     method_args=_method_args(method_args, weights), limit=limit, device=device,
                     batch_size=batch_size, out=out, seed=seed, fid_weights=fid_weights, ceiling_share=ceiling_share,
                     judges=tuple(parse_judge(j) for j in judges), half=half,
                     split_file=str(Path(split_file).resolve()) if split_file else None)
    res = evaluate_wild(cfg, progress=progress, log=lambda s: click.echo(s, err=True))
    click.echo(("reused " if res.reused else "wrote ") + str(res.run_dir))
    for line in format_wild_summary(res.summary):
        click.echo("  " + line)
    if res.failures:
        click.echo(f"{len(res.failures)} of {res.summary['n_photos']} photos not scored or failed, e.g. "
                   f"{res.failures[0]['id']}: {res.failures[0]['error']} (see per_image.parquet)", err=True)


def _method_args(method_args: tuple[str, ...], weights: str | None) -> tuple[tuple[str, object], ...]:
    """``--method-arg`` pairs and ``--weights`` (an absolute path) as the configs' sorted pairs."""
    from .methods.predictors import parse_method_args

    margs = parse_method_args(method_args)
    if weights is not None:
        margs["weights"] = str(Path(weights).resolve())
    return tuple(sorted(margs.items()))


#: Where ``maskbench leaderboard`` reads runs by default: your results, then the runs behind the committed
#: leaderboard (a default root that does not exist is skipped).
DEFAULT_RESULTS = ("results", "leaderboard/runs")


def _results_roots(results: tuple[str, ...]) -> list[str]:
    if results:
        return list(results)
    roots = [r for r in DEFAULT_RESULTS if Path(r).is_dir()]
    if not roots:
        raise UserError(f"no results found: none of {', '.join(DEFAULT_RESULTS)} exists (run maskbench evaluate first)")
    return roots


@main.command("leaderboard")
@click.option("--results", multiple=True, type=click.Path(file_okay=False),
              help="Results root; repeat to merge several [default: results/ and leaderboard/runs/ where present].")
@click.option("--out", default="results/leaderboard", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (the committed leaderboard/ is regenerated with --results leaderboard/runs "
                   "--out leaderboard).")
@click.option("--reported", default=None, type=click.Path(dir_okay=False),
              help="Paper-reported numbers CSV [default: OUT/reported.csv when present].")
@click.option("--primary", default="ssim_hole", show_default=True, help="Metric to rank by.")
def leaderboard_cmd(results, out, reported, primary) -> None:
    """Merge results into one row per method, options, weights and dataset: CSV, Markdown, HTML, charts."""
    import warnings

    from .bench.leaderboard import DamagedRunWarning, build_leaderboard

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DamagedRunWarning)
        paths = build_leaderboard(_results_roots(results), out, reported=reported, primary=primary)
    for w in caught:
        if issubclass(w.category, DamagedRunWarning):
            click.echo(f"warning: {w.message}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for p in paths:
        click.echo(f"wrote {p}")


@main.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--results", multiple=True, type=click.Path(file_okay=False),
              help="Results root; repeat to merge [default: results/ and leaderboard/runs/ where present].")
@click.option("--dataset", default=None, help="Dataset label or fingerprint prefix [default: the only dataset A and B "
              "share, else the latest both were scored on, runs under the first results root first].")
@click.option("--metric", "metrics", multiple=True, help="Only these metrics (repeatable).")
def compare_cmd(a, b, results, dataset, metrics) -> None:
    """Paired comparison of methods (or run folders) A and B on the images both scored: per metric the mean
    difference A - B, its 95% bootstrap interval (which gives the verdict) and a Wilcoxon signed-rank p-value."""
    from .bench.leaderboard import compare_methods, format_comparison
    from .bench.wild import compare_wild, format_wild_comparison, is_wild_run
    from .measures.metrics import get_metric

    if is_wild_run(a) and is_wild_run(b):  # two in-the-wild runs: the mask left behind, judge by judge
        click.echo("\n".join(format_wild_comparison(compare_wild(a, b), a, b)))
        return
    for m in metrics:
        get_metric(m)
    table, info = compare_methods(a, b, _results_roots(results), dataset=dataset, metrics=list(metrics) or None)
    if info["others"]:
        click.echo(f"comparing on {info['dataset']}, the latest dataset both were scored on; "
                   f"also shared: {', '.join(info['others'])} (choose with --dataset)", err=True)
    click.echo(format_comparison(table, info))


@main.command("mask-iou")
@click.option("--segmenter", "segmenters", multiple=True, required=True, metavar="METHOD[:KEY=VALUE,...]",
              help="A blind method (with options) whose predicted masks are scored; repeatable, e.g. 3dprior and "
                   "3dprior:variant=procedural.")
@click.option("--photos", type=click.Path(file_okay=False), default=None,
              help="The labelled photos' folder [default: SHARED/real-masked-dev].")
@click.option("--labels", type=click.Path(file_okay=False), default=None,
              help="A label set [default: the shipped mask_templates/photo/real_mask_labels].")
@click.option("--shared-data", envvar="MASKBENCH_TEST_DATA", type=click.Path(file_okay=False), default=None,
              help="Folder holding real-masked-dev (SHARED) [default: $MASKBENCH_TEST_DATA].")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--seed", type=int, default=0, show_default=True)
def mask_iou_cmd(segmenters, photos, labels, shared_data, device, seed) -> None:
    """Mask IoU of blind methods' segmenters on hand-checked real photos (see maskbench.bench.real_masks), each
    with its 95 % bootstrap interval, and paired differences between options of the same method."""
    from .bench.real_masks import read_label_set, score_segmenter, summarize_iou
    from .bench.wild import parse_judge
    from .measures.stats import paired_difference
    from .methods.predictors import blind_predictor_class, resolve_device

    specs = [parse_judge(s) for s in segmenters]
    if photos is None:
        if shared_data is None:
            raise UserError("name the labelled photos' folder: --photos DIR (real-masked-dev) or --shared-data DIR")
        photos = str(Path(shared_data) / "real-masked-dev")
    label_set = read_label_set(labels)
    # every method and option is checked before any photo is read
    classes = [blind_predictor_class(method, dict(args), "--segmenter") for method, args in specs]
    dev = resolve_device(device)
    scored = []
    click.echo(f"mask IoU on {len(label_set)} hand-checked real photos (inside the photo; 95 % bootstrap intervals)")
    for spec, (method, args), cls in zip(segmenters, specs, classes):
        table = score_segmenter(cls(device=dev, **dict(args)), label_set, photos, seed=seed)
        scored.append((spec, method, table))
        s = summarize_iou(table, seed)
        click.echo(f"  {spec:40s} {s['value']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]  n {s['n']}"
                   + (f", {s['failed']} failed" if s["failed"] else ""))
    firsts: dict[str, tuple[str, object]] = {}
    for spec, method, table in scored:  # paired: each later option of a method vs its first
        base, base_table = firsts.setdefault(method, (spec, table))
        if base_table is not table:
            d = paired_difference(table["iou"], base_table["iou"], seed)
            click.echo(f"  {spec} - {base}: {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] (paired)")


@main.command("realism")
@click.argument("synth_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--real", type=click.Path(), default=None,
              help="Real masked photos [default: SHARED/real-masked-dev, its --real-half].")
@click.option("--real-half", default="measurement", show_default=True,
              help="Half of the split file the real set keeps (harvest, measurement, or all).")
@click.option("--real-split", type=click.Path(dir_okay=False), default=None,
              help="Split file file,sha256,half [default: mask_templates/photo/real_masked_dev_split.csv].")
@click.option("--control-a", type=click.Path(), default=None,
              help="Control: unmasked source photos [default: SHARED/celeba-id200/img_align_celeba].")
@click.option("--control-b", type=click.Path(), default=None,
              help="Control: real unmasked photos [default: SHARED/real-unmasked-dev].")
@click.option("--shared-data", envvar="MASKBENCH_TEST_DATA", type=click.Path(file_okay=False), default=None,
              help="Folder holding the default sets (SHARED) [default: $MASKBENCH_TEST_DATA].")
@click.option("--limit", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Images drawn per set (fixed seed).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--no-cache", is_flag=True, help="Recompute the features (and do not store them).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the numbers here.")
def realism_cmd(synth_dir, real, real_half, real_split, control_a, control_b, shared_data, limit, seed, device, no_cache,
                json_out) -> None:
    """Classifier two-sample test of a Masked-Faces dataset's masked images against real masked photos,
    with a control pair through the same pipeline; prints the realism gap (see maskbench.data.realism)."""
    from .data.realism import format_report, realism_report, resolve_sets, write_report_json

    sets = resolve_sets(synth_dir, real=real, control_a=control_a, control_b=control_b, shared_data=shared_data,
                        limit=limit, seed=seed, real_half=real_half, real_split=real_split)
    rep = realism_report(*sets, seed=seed, device=device, cache=not no_cache,
                         log=lambda s: click.echo(s, err=True), progress=True)
    click.echo(format_report(rep))
    if json_out:
        write_report_json(rep, json_out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
