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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
