"""The dataset card (``README.md``) of a Masked-Faces folder, written by ``maskbench synth`` and pushed by
``maskbench publish``: hub metadata through ``huggingface_hub.DatasetCard`` / ``DatasetCardData``, and
honest sections on personal data, biases and licensing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from ..core.io import atomic_write_text
from .format import CARD_FILE, SPLITS

__all__ = ["dataset_card", "public_text", "write_card"]

_BODY = """
# {title}

Face photos with a synthetic face mask drawn on, paired with the unmasked original and the exact binary
occlusion mask, for training and benchmarking face-mask removal (inpainting the covered part of a face).
Made with [maskbench](https://pypi.org/project/maskbench/) {version}.

## Contents

| split | samples |
| --- | --- |
{split_rows}

Mask types (test split): {type_counts}.

Each sample has `masked` (the input), `original` (ground truth), `mask` (255 = hole, 0 = visible; the
exact pixels the mask covers, straps and loops included) and metadata: `source_id`, `identity`,
`mask_type`, `template_id`, `texture_id`, `seed`, `landmarks` (68 x 2, iBUG-68, output pixels),
`face_box`, `hole_fraction`, `yaw` (degrees, landmark estimate), `num_faces`, and in builds with photo
templates `template_kind` (`procedural` or `photo`; absent: `procedural`).

## How it was made

- Source: {source_description}.
- Faces: dlib HOG detector and 68-point landmarks; the largest face of each image; FFHQ-style aligned
  crops of {size} x {size} px (alignment: {align}).
- Masks: one of {n_types} types ({types}) {templates}, with texture swaps from {textures}; warped
  piecewise-affinely onto the landmarks, lit with the face's own low-frequency shading and alpha-composited.
- Splits by identity where identities are known (no person in both); test fraction {test_fraction}.
- Seed {seed}: the same settings give byte-identical files. Inputs that produced no sample
  ({skipped} of them) are listed in `skipped.csv` with the reason.

## Personal and sensitive information

The images are photographs of real people taken from the source dataset; identities are kept only as
the source's own anonymous ids. Do not use this dataset to identify people.

## Biases and limitations

It inherits the demographic make-up of its source (for CelebA: mostly celebrities, skewed to young and
light-skinned faces). Masks are synthetic: they are drawn, not photographed, so real masks' folds,
occlusion of hair and hands, and lighting are only approximated. Faces the detector misses (strong
profiles, small faces) are absent.

## Licence

{license_note}. {template_licence} Use of the images is bound by the source's terms.

## Citation

```bibtex
{citation}
```
"""


_LOCAL_PATH = re.compile(r"(?:(?<=\s)|(?<=^)|(?<=\())(?:~|[A-Za-z]:)?[/\\][^\s,;()'\"]*")


def public_text(text: str) -> str:
    """``text`` with every absolute local path (``/home/...``, ``~/...``, ``C:\\...``) cut to its last part.

    Cards are published: they name a source, never a folder on the author's machine (manifests written
    by maskbench before 0.1.1 put the source folder's full path in its description).
    """
    def last_part(m: re.Match) -> str:
        name = re.split(r"[/\\]", m.group().rstrip("/\\"))[-1]
        return f"'{name}'" if name and name != "~" else "a local folder"

    return _LOCAL_PATH.sub(last_part, text)


def _templates_text(cfg: dict[str, Any], photo: dict[str, Any] | None) -> str:
    kind = str(cfg.get("templates") or "procedural").split(":", 1)[0]
    drawn = "from maskbench's library of drawn mask templates in a canonical face frame"
    if photo is None or kind == "procedural":
        return drawn
    keyed = (f"from {photo.get('templates')} masks keyed out of real photos ({photo.get('source')}; maskbench "
             "templates harvest: segmentation, closed-form alpha matting, their own shading divided out)")
    if kind == "photo":
        return keyed + " (a type without photo templates is drawn)"
    return f"{keyed} with probability {cfg.get('photo_share')} per type, else {drawn}"


def _template_licence(photo: dict[str, Any] | None) -> str:
    own = "The drawn mask templates and procedural textures are maskbench's own (Apache-2.0)."
    if photo is None:
        return own
    return (f"{own} The photo templates are cut out of {photo.get('source')}; their licence: {photo.get('licence')}, "
            "which this dataset inherits.")


def dataset_card(manifest: dict[str, Any], hub_layout: bool = False) -> str:
    """The dataset card (README.md with YAML metadata) for a folder made by ``maskbench synth``.

    Args:
        manifest: the folder's ``manifest.json`` content (config, source, counts).
        hub_layout: describe the parquet layout of :func:`build_hub_folder` in the ``configs:`` block
            (the on-disk imagefolder layout needs none).

    Returns:
        The card as Markdown text: YAML metadata (``huggingface_hub.DatasetCardData``) and sections on
        contents, how it was made, personal data, biases, licence and citation.

    Raises:
        KeyError: the manifest lacks ``config``, ``source`` or ``source.name``.
    """
    cfg, src, counts = manifest["config"], manifest["source"], manifest.get("counts", {})
    total = sum(counts.get(s, 0) for s in SPLITS)
    size_cat = "n<1K" if total < 1000 else "1K<n<10K" if total < 10_000 else "10K<n<100K" if total < 100_000 else "n>100K"
    meta = DatasetCardData(
        license=src.get("license") or "unknown",
        pretty_name=f"Masked-Faces ({src['name']})",
        task_categories=["image-to-image"],
        tags=["faces", "face-mask-removal", "inpainting", "synthetic", "maskbench"],
        size_categories=[size_cat],
        source_datasets=[src["name"]],
        configs=[{"config_name": "default", "data_files": [
            {"split": s, "path": f"data/{s}-*"} for s in SPLITS if counts.get(s, 0) > 0]}] if hub_layout else None,
    )
    types = cfg["mask_types"]
    by_type = counts.get("test_by_type") or counts.get("train_by_type") or {}
    body = _BODY.format(
        title=meta.pretty_name,
        version=manifest.get("maskbench_version", ""),
        split_rows="\n".join(f"| {s} | {counts.get(s, 0)} |" for s in SPLITS),
        type_counts=", ".join(f"{t} {by_type.get(t, 0)}" for t in types) or "none",
        source_description=public_text(str(src.get("description") or src["name"])),
        size=cfg["size"],
        align="FFHQ" if cfg["align"] else "none, original frame",
        n_types=len(types),
        types=", ".join(types),
        textures=f"the user's texture photos ({Path(cfg['textures']).name})" if cfg.get("textures")
        else "the procedural texture library",
        test_fraction=cfg["test_fraction"],
        seed=cfg["seed"],
        skipped=counts.get("skipped", 0),
        license_note=src.get("license_note") or f"Licence inherited from the source: {src.get('license')}",
        templates=_templates_text(cfg, manifest.get("photo_library")),
        template_licence=_template_licence(manifest.get("photo_library")),
        citation=src.get("citation") or "% no citation known for the source",
    )
    return str(DatasetCard(f"---\n{meta.to_yaml()}\n---\n{body}"))


def write_card(out: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write ``out/README.md`` (the on-disk card) atomically.

    Raises:
        KeyError: the manifest lacks ``config`` or ``source``.
        OSError: the file cannot be written.
    """
    atomic_write_text(Path(out) / CARD_FILE, dataset_card(manifest))
