"""Silence library chatter that is not the user's business, for the duration of one call.

- :func:`opencv_quiet`: OpenCV's own log (``[ WARN:0@0.4] ... setPreferableTarget Targets are not supported
  by the new graph engine``, printed by OpenCV 5's DNN engine each time a YuNet detector is created) below
  errors.
- :func:`datasets_quiet`: Hugging Face ``datasets``' logging below errors and its progress bars off
  ("Downloading data", "Generating train split" for a local folder being read).

Both restore the previous setting on exit, so a caller that wants the chatter keeps it elsewhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["opencv_quiet", "datasets_quiet"]


@contextlib.contextmanager
def opencv_quiet() -> Iterator[None]:
    """OpenCV logs errors only inside the block (``cv2.utils.logging``); the previous level after it."""
    import cv2

    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:  # an OpenCV build without the logging module: nothing to quiet
        yield
        return
    old = log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(old)


@contextlib.contextmanager
def datasets_quiet() -> Iterator[None]:
    """``datasets`` logs errors only and shows no progress bars inside the block; as before after it."""
    import datasets
    from datasets.utils import logging as dlog

    old_level = dlog.get_verbosity()
    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    dlog.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        dlog.set_verbosity(old_level)
        if bars_were_on:
            datasets.enable_progress_bars()
