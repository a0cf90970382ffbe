"""Masks keyed out of real photos: the photo-template harvest (``maskbench templates harvest``).

:mod:`~maskbench.harvest.keying` keys one photo's mask out (face, segmentation, landmarks, matting, gates,
canonical layer); :mod:`~maskbench.harvest.library` runs it over a folder and writes the library that
:class:`maskbench.data.masks.photo.PhotoLibrary` reads, with its card, ``rejected.csv`` and contact sheets.
This stage comes after ``methods`` (its segmenters and landmark regressor are the blind methods' networks).
"""
