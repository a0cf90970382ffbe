"""Paths as results files record them: as the user gave them, never the machine's absolute layout.

A run's ``summary.json`` and ``manifest.json`` travel (the committed leaderboard holds runs made on other
machines), so they record ``data/celeba-masked`` as typed, not ``/home/me/maskbench/data/celeba-masked``.
An absolute path inside the maskbench cache or the user's home is written ``$MASKBENCH_CACHE/...`` or
``~/...``; :func:`expand_recorded` turns such a path back into one on this machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from .resources import cache_dir

__all__ = ["CACHE_MARK", "recorded_path", "expand_recorded"]

#: How a recorded path names the maskbench cache folder (:func:`maskbench.core.resources.cache_dir`).
CACHE_MARK = "$MASKBENCH_CACHE"
#: Prefixes of a data spec that are kept in front of the path they carry (``wild:DIR``; ``hf:`` is no path).
_PREFIXES = ("wild:",)


def recorded_path(path: str | os.PathLike | None) -> str | None:
    """``path`` as a results file should record it.

    Args:
        path: a path or data spec as the user gave it (``data/x``, ``wild:../photos``, ``hf:user/name``,
            or an absolute path found by a default such as the cache).

    Returns:
        The same text for a relative path or an ``hf:`` spec; an absolute path under the maskbench cache or
        the home folder as ``$MASKBENCH_CACHE/rest`` or ``~/rest``; any other absolute path unchanged (the
        user typed it). ``None`` stays ``None``.

    Example:
        >>> recorded_path("data/celeba-masked")
        'data/celeba-masked'
        >>> recorded_path(Path.home() / "photos")
        '~/photos'
    """
    if path is None:
        return None
    s = os.fspath(path)
    for prefix in _PREFIXES:
        if s.startswith(prefix):
            return prefix + str(recorded_path(s[len(prefix):]))
    if s.startswith("hf:") or not Path(s).is_absolute():
        return s
    p = Path(s)
    for root, mark in ((cache_dir(), CACHE_MARK), (Path.home(), "~")):
        try:
            return f"{mark}/{p.relative_to(root).as_posix()}"
        except ValueError:
            continue
    return s


def expand_recorded(path: str | None) -> Path | None:
    """A path written by :func:`recorded_path` as a path on this machine (``$MASKBENCH_CACHE`` and ``~``
    expanded; a relative path stays relative to the working folder). ``None`` or ``""`` gives ``None``."""
    if not path:
        return None
    if path == CACHE_MARK or path.startswith(CACHE_MARK + "/"):
        return cache_dir() / path[len(CACHE_MARK) + 1:]
    return Path(path).expanduser()
