"""The one progress bar of long work (synthesis, training, scoring, feature passes): tqdm on stderr with a
count, a rate and an ETA."""

from __future__ import annotations

__all__ = ["progress_bar"]


def progress_bar(total: int, desc: str | None = None, *, enabled: bool = True, unit: str = "image",
                 initial: int = 0, iterable=None, smoothing: float = 0.1):
    """A tqdm bar on stderr (count, rate, ETA), over ``iterable`` if given; a silent one when not ``enabled``.

    Args:
        total: the number of units.
        desc: the bar's label.
        enabled: False gives a bar that prints nothing (same interface).
        unit: what is counted (``image``, ``face``, ``step``, ...).
        initial: units already done (a resumed run).
        iterable: wrap this iterable.
        smoothing: tqdm's rate smoothing (0: average over the whole run; 1: the last update only).
    """
    from tqdm import tqdm

    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                dynamic_ncols=True, smoothing=smoothing)
