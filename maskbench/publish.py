"""Dataset cards and publishing a Masked-Faces folder to the Hugging Face datasets hub.

``publish`` writes the hub repository's files first (parquet shards with the images embedded, in the
hub's own ``data/{split}-NNNNN-of-NNNNN.parquet`` layout, plus the card), then uploads that folder, so
``--to-disk`` shows exactly what a push sends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .dataset import METADATA_FILE, SPLITS, DatasetFormatError, MaskedFaces
from .io import atomic_write_text

__all__ = ["dataset_card", "public_text", "write_card", "build_hub_folder", "publish", "PublishError"]

#: Largest parquet shard, in bytes (the hub's own default for ``push_to_hub``).
MAX_SHARD_BYTES = 500 * 1024 * 1024

_TEMPLATE = """---
{yaml}---

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
`face_box`, `hole_fraction`, `yaw` (degrees, landmark estimate), `num_faces`.

## How it was made

- Source: {source_description}.
- Faces: dlib HOG detector and 68-point landmarks; the largest face of each image; FFHQ-style aligned
  crops of {size} x {size} px (alignment: {align}).
- Masks: one of {n_types} types ({types}) from maskbench's library of mask templates, drawn in a canonical
  face frame, with texture swaps from {textures}; warped piecewise-affinely onto the landmarks, lit with
  the face's own low-frequency shading and alpha-composited.
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

{license_note}. The mask templates and textures are maskbench's own (Apache-2.0). Use of the images is
bound by the source's terms.

## Citation

```bibtex
{citation}
```
"""


class PublishError(RuntimeError):
    """Publishing failed (not a dataset folder, hub unreachable, no permission)."""


def _yaml(meta: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)


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


def dataset_card(manifest: dict[str, Any], hub_layout: bool = False) -> str:
    """The dataset card (README.md with YAML metadata) for a folder made by ``maskbench synth``.

    Args:
        manifest: the folder's ``manifest.json`` content (config, source, counts).
        hub_layout: describe the parquet layout of :func:`build_hub_folder` in the ``configs:`` block
            (the on-disk imagefolder layout needs none).

    Returns:
        The card as Markdown text.
    """
    cfg, src, counts = manifest["config"], manifest["source"], manifest.get("counts", {})
    total = sum(counts.get(s, 0) for s in SPLITS)
    size_cat = "n<1K" if total < 1000 else "1K<n<10K" if total < 10_000 else "10K<n<100K" if total < 100_000 else "n>100K"
    meta: dict[str, Any] = {
        "license": src.get("license") or "unknown",
        "pretty_name": f"Masked-Faces ({src['name']})",
        "task_categories": ["image-to-image"],
        "tags": ["faces", "face-mask-removal", "inpainting", "synthetic", "maskbench"],
        "size_categories": [size_cat],
        "source_datasets": [src["name"]],
    }
    if hub_layout:
        meta["configs"] = [{"config_name": "default", "data_files": [
            {"split": s, "path": f"data/{s}-*"} for s in SPLITS if counts.get(s, 0) > 0]}]
    types = cfg["mask_types"]
    by_type = counts.get("test_by_type") or counts.get("train_by_type") or {}
    return _TEMPLATE.format(
        yaml=_yaml(meta),
        title=meta["pretty_name"],
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
        citation=src.get("citation") or "% no citation known for the source",
    )


def write_card(out: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write ``out/README.md`` (the on-disk card) atomically."""
    atomic_write_text(Path(out) / "README.md", dataset_card(manifest))


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    if not path.is_file() or not any((folder / s / METADATA_FILE).is_file() for s in SPLITS):
        raise PublishError(f"{folder} is not a maskbench dataset folder (no manifest.json / metadata.jsonl)")
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PublishError(f"{path}: damaged, not JSON ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict) \
            or not isinstance(manifest.get("source"), dict) or "name" not in manifest["source"]:
        raise PublishError(f"{path}: not a maskbench synth manifest (needs config and source.name)")
    return manifest


def _check_records(folder: Path) -> None:
    """Refuse a dataset whose records name files outside it or carry unsafe ids (nothing is read)."""
    for split in SPLITS:
        if not (folder / split / METADATA_FILE).is_file():
            continue
        try:
            ds = MaskedFaces(folder, split)
        except DatasetFormatError as e:
            raise PublishError(str(e)) from None
        if ds.refused:
            i, why = next(iter(ds.refused.items()))
            raise PublishError(f"{folder / split / METADATA_FILE}: {len(ds.refused)} unsafe record(s), first "
                               f"line {i + 1}: {why}; nothing was published")


def build_hub_folder(folder: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Write what :func:`publish` uploads: ``dest/data/{split}-NNNNN-of-NNNNN.parquet`` + ``dest/README.md``.

    Images are embedded in the parquet files as ``Image()`` features (bytes), so the result loads with
    ``datasets.load_dataset(dest)`` and needs nothing else.

    Raises:
        PublishError: ``folder`` is not a dataset made by ``maskbench synth``, its manifest is damaged, a
            record names a file outside the folder or has an unsafe id, or the shards cannot be written.
    """
    folder, dest = Path(folder), Path(dest)
    manifest = _read_manifest(folder)
    _check_records(folder)
    card = dataset_card(manifest, hub_layout=True)
    try:
        (dest / "data").mkdir(parents=True, exist_ok=True)
        # a private cache: the datasets cache is keyed by path, and a stale entry would publish old rows
        with tempfile.TemporaryDirectory(prefix="maskbench-hfcache-") as cache:
            _write_shards(folder, dest, manifest, cache)
    except Exception as e:  # datasets/pyarrow/OS errors share no base class: one line, with the cause
        root = e
        while root.__cause__ is not None:  # datasets wraps the real error in DatasetGenerationError
            root = root.__cause__
        raise PublishError(f"cannot write the parquet shards of {folder} to {dest}: {_first_line(root)}") from None
    atomic_write_text(dest / "README.md", card)
    return dest


def _write_shards(folder: Path, dest: Path, manifest: dict[str, Any], cache: str) -> None:
    import datasets
    from datasets.table import embed_table_storage

    for split in SPLITS:
        if not (folder / split / METADATA_FILE).is_file() or manifest.get("counts", {}).get(split, 0) == 0:
            continue
        ds = datasets.load_dataset("imagefolder", data_dir=str(folder / split), split="train", cache_dir=cache)
        nbytes = sum(f.stat().st_size for sub in ("masked", "original", "mask") for f in (folder / split / sub).iterdir())
        num_shards = max(1, min(len(ds), nbytes // MAX_SHARD_BYTES + 1))
        for i in range(num_shards):
            shard = ds.shard(num_shards=num_shards, index=i, contiguous=True)
            shard = shard.with_format("arrow").map(embed_table_storage, batched=True, keep_in_memory=True)
            shard = shard.with_format(None)
            shard.to_parquet(str(dest / "data" / f"{split}-{i:05d}-of-{num_shards:05d}.parquet"))


def publish(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Push a dataset folder to the hub as a dataset repository.

    Args:
        folder: made by ``maskbench synth``.
        repo_id: ``user/name`` on the hub.
        private: create the repository private.
        token: hub token (default: the logged-in user's).

    Returns:
        The repository URL.

    Raises:
        PublishError: not a dataset folder, or the hub cannot be reached or refuses the upload.
    """
    from huggingface_hub import HfApi

    from .sources import hub_reachable

    folder = Path(folder)
    _read_manifest(folder)
    _check_records(folder)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or not hub_reachable():
        raise PublishError(f"cannot publish {repo_id}: the Hugging Face Hub is unreachable (offline?); "
                           "use --to-disk PATH to write the files instead")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    except Exception as e:  # network, auth and HTTP errors of huggingface_hub share no base class
        raise PublishError(f"cannot reach the Hugging Face Hub to create {repo_id}: {_first_line(e)}") from None
    tmp = Path(tempfile.mkdtemp(prefix="maskbench-publish-"))
    try:
        build_hub_folder(folder, tmp)
        api.upload_folder(folder_path=str(tmp), repo_id=repo_id, repo_type="dataset",
                          commit_message="Upload Masked-Faces dataset (maskbench)")
    except PublishError:
        raise
    except Exception as e:
        raise PublishError(f"upload of {repo_id} failed: {_first_line(e)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(url)


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
