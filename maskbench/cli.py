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


@main.command("templates")
@click.option("--type", "mask_type", type=click.Choice(["surgical", "cloth", "n95", "kn95", "scarf"]),
              help="Only templates of this mask type.")
@click.option("--sheet", type=click.Path(dir_okay=False), help="Also write a contact sheet PNG here.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many templates (listing and sheet).")
@click.option("--size", type=click.IntRange(min=32, max=512), default=128, show_default=True,
              help="Tile size of the contact sheet.")
@user_errors(OSError, ValueError)
def templates_cmd(mask_type: str | None, sheet: str | None, limit: int | None, size: int) -> None:
    """List the mask templates (counts per type, then one line each); optionally draw a contact sheet."""
    from collections import Counter

    from .templates import MASK_TYPES, load_templates, write_contact_sheet

    specs = load_templates()
    counts = Counter(t.mask_type for t in specs)
    click.echo(f"{'type':<10}{'templates':>10}")
    for t in MASK_TYPES:
        click.echo(f"{t:<10}{counts.get(t, 0):>10}")
    click.echo(f"{'total':<10}{len(specs):>10}")
    chosen = [t for t in specs if mask_type is None or t.mask_type == mask_type][:limit]
    click.echo("")
    for t in chosen:
        extra = f" valve={t.valve}" if t.valve != "none" else ""
        click.echo(f"{t.template_id:<16}{t.mask_type:<10}{t.style:<10}{t.anchors:<10}{t.straps:<12}{t.color}{extra}")
    if sheet:
        write_contact_sheet(sheet, chosen, size=size)
        click.echo(f"wrote {sheet} ({len(chosen)} templates)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
