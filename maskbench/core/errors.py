"""The one base of the errors a user can fix, and the one-line form errors are reported in.

:class:`MaskbenchError` marks an error the user caused and can act on: a bad argument or option, a missing
file, model or dataset, unusable input data. The command line prints its first line and exits with status 2.
Every other exception is a bug and keeps its traceback (inside a run, a method's own exception on one image is
recorded as that image's failure, with its type and first line, and the run goes on).

Each specific error also keeps the built-in type callers caught before (``ValueError``, ``LookupError``,
``FileNotFoundError``, ...), so ``except ValueError`` around a library call still works.
"""

from __future__ import annotations

import re

__all__ = ["MaskbenchError", "MissingFileError", "first_line", "stable_message"]


class MaskbenchError(Exception):
    """An error the user can fix (module docstring): printed as one line by the command line, exit status 2."""


class MissingFileError(MaskbenchError, FileNotFoundError):
    """A file or folder the user named (or a default one) does not exist or holds nothing usable."""


def first_line(e: BaseException) -> str:
    """The first non-empty line of ``str(e)``, or the exception's type name when the message is empty."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


_ADDRESS = re.compile(r" (?:object )?at 0x[0-9a-fA-F]+")


def stable_message(e: BaseException) -> str:
    """``"TypeName: first line of the message"`` without memory addresses (``<_io.BytesIO object at
    0x7f...>`` becomes ``<_io.BytesIO>``), so the same failure gives the same text in every run."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = _ADDRESS.sub("", text)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
