"""Publishing a Masked-Faces folder to the Hugging Face datasets hub.

``publish`` writes the hub repository's files first (parquet shards with the images embedded, in the
hub's own ``data/{split}-NNNNN-of-NNNNN.parquet`` layout, plus the card), then uploads that folder, so
``--to-disk`` shows exactly what a push sends.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..core.errors import MaskbenchError
from ..core.io import atomic_write_text
from ..core.quiet import datasets_quiet
from .card import dataset_card
from .dataset import DatasetFormatError, MaskedFaces
from .format import METADATA_FILE, SPLITS

__all__ = ["build_hub_folder", "publish", "PublishError"]

#: Largest parquet shard, in bytes (the hub's own default for ``push_to_hub``).
MAX_SHARD_BYTES = 500 * 1024 * 1024

class PublishError(MaskbenchError, RuntimeError):
    """Publishing failed (not a dataset folder, hub unreachable, no permission)."""


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
    """Refuse a dataset whose records name files outside it, carry unsafe ids or repeat an id (nothing is read)."""
    for split in SPLITS:
        if not (folder / split / METADATA_FILE).is_file():
            continue
        try:
            ds = MaskedFaces(folder, split)
        except DatasetFormatError as e:
            raise PublishError(str(e)) from None
        if ds.refused:
            i, why = next(iter(ds.refused.items()))
            raise PublishError(f"{folder / split / METADATA_FILE}: {len(ds.refused)} refused record(s) (unsafe or duplicate), first "
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
        with tempfile.TemporaryDirectory(prefix="maskbench-hfcache-") as cache, datasets_quiet():
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
