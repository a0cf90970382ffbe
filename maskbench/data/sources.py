"""Where face photos come from: CelebA, FFHQ, LFW, any Hugging Face hub dataset, a folder, or a demo image.

A source is resolved once, in the parent process, into a sorted list of :class:`SourceItem`; each item
knows how to fetch its own encoded bytes, so worker processes never need the source object.

Split assignment is by identity where identities are known (no person is in both splits), otherwise by
the source's own partition file, otherwise by a hash of the image id. Both are deterministic.

Folder sources account for every entry they find (:func:`scan_folder`): regular files are items, hidden
ones included; folders are searched, symbolic links to folders followed once; whatever is not read (a
hidden folder, an empty folder, a link loop, a broken link, a pipe) is still an item, carrying the reason
in :attr:`SourceItem.problem`, so it ends up in ``skipped.csv`` instead of going missing. Descriptions name
the source, never a path on this machine (they go into dataset cards).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..core.errors import MaskbenchError, first_line, stable_message

__all__ = [
    "SourceError",
    "SourceItem",
    "Source",
    "resolve_source",
    "assign_split",
    "SOURCE_NAMES",
]

SOURCE_NAMES = ("celeba", "ffhq", "lfw", "hf:<repo_id>", "<folder>", "<fsspec URL, e.g. s3://bucket/prefix>")

#: Licence identifiers (Hugging Face card vocabulary) inherited by datasets built from each source.
LICENSES = {
    "celeba": ("other", "CelebA: non-commercial research purposes only (Liu et al., ICCV 2015)"),
    "ffhq": ("cc-by-nc-sa-4.0", "FFHQ: images under their Flickr licences, collection CC BY-NC-SA 4.0 (NVIDIA)"),
    "lfw": ("other", "LFW: research use (Huang et al., 2007)"),
    "demo": ("cc0-1.0", "scikit-image 'astronaut' (NASA photograph of Eileen Collins, public domain)"),
    "folder": ("unknown", "inherited from the source images: unknown"),
}
CITATIONS = {
    "celeba": "@inproceedings{liu2015faceattributes, title={Deep Learning Face Attributes in the Wild}, "
    "author={Liu, Ziwei and Luo, Ping and Wang, Xiaogang and Tang, Xiaoou}, booktitle={ICCV}, year={2015}}",
    "ffhq": "@inproceedings{karras2019style, title={A Style-Based Generator Architecture for Generative "
    "Adversarial Networks}, author={Karras, Tero and Laine, Samuli and Aila, Timo}, booktitle={CVPR}, year={2019}}",
    "lfw": "@techreport{LFWTech, title={Labeled Faces in the Wild: A Database for Studying Face Recognition in "
    "Unconstrained Environments}, author={Huang, Gary B. and Ramesh, Manu and Berg, Tamara and Learned-Miller, "
    "Erik}, institution={University of Massachusetts, Amherst}, number={07-49}, year={2007}}",
}
CELEBA_HUB_REPO = "flwrlabs/celeba"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


class SourceError(MaskbenchError, ValueError):
    """A source cannot be used: unknown name, missing folder, hub unreachable."""


@dataclass(frozen=True)
class SourceItem:
    """One input image.

    Attributes:
        source_id: unique, stable id within the source (e.g. CelebA's ``000123.jpg``).
        path: file to read, or None for in-memory/hub items.
        identity: person id when the source knows it, else None.
        source_split: the source's own partition (``train``/``valid``/``test``) when it has one.
        hub: ``(repo_id, split, row, image_column)`` for hub items.
        url: an fsspec URL (``s3://...``, ``gs://...``, ``file://...``) read with :func:`fsspec.open` where the
            item is read (a synthesis worker or Ray actor, not the process that listed it).
        problem: why a folder entry is not read (not a file, ...), or None for a readable item.
    """

    source_id: str
    path: str | None = None
    identity: str | None = None
    source_split: str | None = None
    hub: tuple[str, str, int, str] | None = None
    problem: str | None = None
    url: str | None = None

    def read_bytes(self) -> bytes:
        """The encoded image bytes.

        Raises:
            OSError: the file cannot be read.
        """
        if self.path is not None:
            return Path(self.path).read_bytes()
        if self.url is not None:
            import fsspec

            try:
                with fsspec.open(self.url, "rb") as f:
                    return f.read()
            except OSError:
                raise
            except Exception as e:  # a remote filesystem's own errors (credentials, network) are read errors here
                raise OSError(f"{self.url}: {stable_message(e)}") from None
        if self.hub is not None:
            repo, split, row, col = self.hub
            value = _hub_dataset(repo, split)[row][col]
            return _image_value_bytes(value)
        if self.source_id.startswith("demo:"):
            return _demo_bytes()
        raise OSError(f"{self.source_id}: no way to read this item")


@dataclass
class Source:
    """A resolved source: its name, items, licence and citation for the dataset card."""

    name: str
    description: str
    items: list[SourceItem]
    license: str = "unknown"
    license_note: str = ""
    citation: str = ""
    has_identities: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _stable_fraction(key: str, salt: str = "maskbench-split-v1") -> float:
    h = hashlib.sha256(f"{salt}|{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign_split(item: SourceItem, test_fraction: float) -> str:
    """``"train"`` or ``"test"`` for an item, deterministic.

    By identity when known (all images of a person land in one split), else by the source's own
    partition (``test`` stays test; ``train``/``valid`` become train), else by a hash of ``source_id``.
    """
    if item.identity is not None:
        return "test" if _stable_fraction(f"id:{item.identity}") < test_fraction else "train"
    if item.source_split is not None:
        return "test" if item.source_split == "test" else "train"
    return "test" if _stable_fraction(f"img:{item.source_id}") < test_fraction else "train"


def resolve_source(src: str | None, data_dir: str | os.PathLike | None = None, hub_split: str = "train") -> Source:
    """Turn a ``--src`` value into a :class:`Source`.

    Args:
        src: ``celeba``, ``ffhq``, ``lfw``, ``hf:<repo_id>``, a folder path, or None for the built-in demo.
        data_dir: where celeba/ffhq/lfw live on disk (their own layouts).
        hub_split: the split to read from a hub dataset.

    Raises:
        SourceError: unknown source, missing folder or files, or a hub dataset that cannot be loaded.
    """
    if src is None or src == "demo":
        return Source("demo", "scikit-image's astronaut photograph (built-in demo)",
                      [SourceItem("demo:astronaut")], *LICENSES["demo"])
    if src == "celeba":
        return _celeba(data_dir)
    if src == "ffhq":
        return _flat_folder("ffhq", _need_dir("ffhq", data_dir))
    if src == "lfw":
        return _lfw(_need_dir("lfw", data_dir))
    if src.startswith("hf:"):
        return _hub(src[3:], hub_split)
    if URL_PATTERN.match(src):
        return _url_folder(src)
    p = Path(src).expanduser()
    if p.is_dir():
        return _flat_folder("folder", p)
    if p.exists():
        raise SourceError(f"--src {src}: is a file, expected a folder of images or one of {', '.join(SOURCE_NAMES)}")
    raise SourceError(f"--src {src}: no such folder, and not a known source ({', '.join(SOURCE_NAMES)})")


#: ``protocol://`` at the start of a ``--src``: an fsspec URL (not a Windows drive letter).
URL_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+://")


def _url_folder(url: str) -> Source:
    """Every file under an fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``file:///...``), listed here and read
    by whoever processes the item (:attr:`SourceItem.url`).

    Raises:
        SourceError: fsspec has no filesystem for the protocol (the message names the package to install), the
            location cannot be listed, or holds no file.
    """
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise SourceError(f"--src {url}: fsspec cannot open this URL ({first_line(e)})") from None
    try:
        files = sorted(fs.find(root))
    except Exception as e:  # noqa: BLE001 - any listing failure (missing bucket, credentials) is the user's to fix
        raise SourceError(f"--src {url}: cannot list it ({first_line(e)})") from None
    if not files:
        raise SourceError(f"--src {url}: no files there")
    base = root.rstrip("/") + "/"
    items = [SourceItem(f[len(base):] if f.startswith(base) else f, url=fs.unstrip_protocol(f)) for f in files]
    lic, note = LICENSES["folder"]
    return Source("url", f"images under {url}", items, lic, note)


def _need_dir(name: str, data_dir) -> Path:
    if data_dir is None:
        raise SourceError(f"--src {name} needs --data-dir pointing at the {name} images (or use hf:<repo_id>)")
    p = Path(data_dir).expanduser()
    if not p.is_dir():
        raise SourceError(f"--data-dir {p}: no such folder")
    return p


def scan_folder(root: Path) -> list[SourceItem]:
    """Every entry under ``root``, as items sorted by ``source_id`` (the ``/``-separated relative path).

    Regular files (hidden ones too, and links to files) are readable items. Folders are searched, links
    to folders followed once. Not read, but listed with a :attr:`SourceItem.problem`: hidden folders,
    empty folders, a folder reached a second time (a link loop or a second link), broken links, and
    anything that is not a regular file (pipes, sockets, devices), which could block a reader.
    """
    items: list[SourceItem] = []
    seen = {root.resolve()}

    def walk(folder: Path) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            items.append(_problem(root, folder, f"folder cannot be listed ({e.strerror or e})"))
            return
        if not entries and folder != root:
            items.append(_problem(root, folder, "empty folder"))
        for e in entries:
            p = Path(e.path)
            try:
                is_dir, is_file, is_link = e.is_dir(), e.is_file(), e.is_symlink()
            except OSError as err:
                items.append(_problem(root, p, f"cannot be inspected ({err.strerror or err})"))
                continue
            if is_dir:
                real = p.resolve()
                if e.name.startswith("."):
                    items.append(_problem(root, p, "hidden folder, not searched"))
                elif real in seen:
                    items.append(_problem(root, p, "folder already searched (a link loop or a second link)"))
                else:
                    seen.add(real)
                    walk(p)
            elif is_file:
                items.append(SourceItem(p.relative_to(root).as_posix(), path=str(p)))
            elif is_link:
                items.append(_problem(root, p, "broken symbolic link"))
            else:
                items.append(_problem(root, p, "not a regular file (a pipe, socket or device)"))

    walk(root)
    return sorted(items, key=lambda it: it.source_id.split("/"))


def _problem(root: Path, path: Path, reason: str) -> SourceItem:
    return SourceItem(path.relative_to(root).as_posix(), path=str(path), problem=reason)


def _need_files(root: Path, items: list[SourceItem]) -> None:
    if not any(it.problem is None for it in items):
        odd = next((f" ({it.source_id}: {it.problem})" for it in items), "")
        raise SourceError(f"{root}: folder holds no files{odd}")


def _flat_folder(name: str, root: Path) -> Source:
    # every entry is an item: non-images and non-files are reported as skipped, not silently ignored
    items = scan_folder(root)
    _need_files(root, items)
    lic, note = LICENSES.get(name, LICENSES["folder"])
    what = "FFHQ images (a local copy)" if name == "ffhq" else f"images from a local folder named {root.name!r}"
    return Source(name, what, items, lic, note, CITATIONS.get(name, ""))


def _celeba(data_dir) -> Source:
    from ..core.resources import cache_dir

    candidates = [Path(data_dir).expanduser()] if data_dir is not None else [cache_dir() / "celeba"]
    for root in candidates:
        if (root / "img_align_celeba").is_dir():
            return _celeba_folder(root)
    if data_dir is not None:
        raise SourceError(f"--data-dir {candidates[0]}: no img_align_celeba/ folder (CelebA layout expected)")
    try:
        src = _hub(CELEBA_HUB_REPO, "train")
    except SourceError as e:
        raise SourceError(
            f"CelebA not found: pass --data-dir DIR (with img_align_celeba/ and identity_CelebA.txt) "
            f"or put it in {candidates[0]}; hub copy {CELEBA_HUB_REPO} unavailable ({e})"
        ) from None
    src.name, src.license, src.license_note, src.citation = "celeba", *LICENSES["celeba"], CITATIONS["celeba"]
    return src


def _celeba_folder(root: Path) -> Source:
    img_dir = root / "img_align_celeba"
    identities: dict[str, str] = {}
    id_file = root / "identity_CelebA.txt"
    if id_file.is_file():
        for line in id_file.read_text().split("\n"):
            parts = line.split()
            if len(parts) == 2:
                identities[parts[0]] = parts[1]
    partition: dict[str, str] = {}
    part_file = root / "list_eval_partition.txt"
    names = {"0": "train", "1": "valid", "2": "test"}
    if part_file.is_file():
        for line in part_file.read_text().split("\n"):
            parts = line.split()
            if len(parts) == 2:
                partition[parts[0]] = names.get(parts[1], parts[1])
    items = [
        replace(it, identity=identities.get(it.source_id), source_split=partition.get(it.source_id))
        if it.problem is None else it
        for it in scan_folder(img_dir)
    ]
    if not any(it.problem is None for it in items):
        raise SourceError(f"{img_dir}: no images")
    return Source("celeba", "CelebA aligned crops (img_align_celeba, a local copy)", items, *LICENSES["celeba"],
                  CITATIONS["celeba"], has_identities=bool(identities))


def _lfw(root: Path) -> Source:
    if (root / "lfw").is_dir():
        root = root / "lfw"
    # <Person_Name>/<file> items carry the person as identity; anything else is listed too
    items = [
        replace(it, identity=it.source_id.split("/")[0]) if it.problem is None and it.source_id.count("/") == 1
        else it
        for it in scan_folder(root)
    ]
    if not any(it.identity is not None for it in items):
        raise SourceError(f"{root}: no LFW person folders (expected <root>/<Person_Name>/<Person_Name>_0001.jpg)")
    return Source("lfw", "LFW (a local copy)", items, *LICENSES["lfw"], CITATIONS["lfw"], has_identities=True)


_IDENTITY_COLUMNS = ("identity", "celeb_id", "person_id", "person", "subject", "label")


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the Hugging Face Hub endpoint accepts a TCP connection (or ``HF_HUB_OFFLINE`` asks for the cache).

    Checked first so an offline machine fails in seconds with one line, instead of after the hub
    client's retries.
    """
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return True
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@lru_cache(maxsize=4)
def _hub_dataset(repo: str, split: str):
    import datasets

    return datasets.load_dataset(repo, split=split)


def _hub(repo: str, split: str) -> Source:
    if not repo:
        raise SourceError("--src hf:<repo_id> needs a repository id, e.g. hf:user/faces")
    if not hub_reachable():
        raise SourceError(f"hf:{repo}: cannot reach the Hugging Face Hub (offline?); "
                          "set HF_HUB_OFFLINE=1 to use a cached copy")
    try:
        import datasets

        ds = _hub_dataset(repo, split)
    except Exception as e:  # datasets raises many types for offline/missing repos; report them as one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SourceError(f"hf:{repo} (split {split}): cannot load from the Hugging Face Hub: {msg}") from None
    image_cols = [k for k, f in ds.features.items() if isinstance(f, datasets.Image)]
    if not image_cols:
        raise SourceError(f"hf:{repo}: no image column (features: {', '.join(ds.features)})")
    col = image_cols[0]
    id_col = next((c for c in _IDENTITY_COLUMNS if c in ds.features), None)
    ids = ds[id_col] if id_col else [None] * len(ds)
    items = [
        SourceItem(f"{split}/{i:08d}", identity=None if ids[i] is None else str(ids[i]), hub=(repo, split, i, col))
        for i in range(len(ds))
    ]
    lic = "unknown"
    try:
        lic = ds.info.license or "unknown"
    except AttributeError:
        pass
    return Source(f"hf:{repo}", f"Hugging Face dataset {repo} ({split})", items, lic,
                  f"inherited from {repo}", ds.info.citation or "", has_identities=id_col is not None)


def _image_value_bytes(value: Any) -> bytes:
    """Encoded bytes of a hub image cell (PIL image or {'bytes','path'} dict)."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        return Path(value["path"]).read_bytes()
    buf = io.BytesIO()
    value.save(buf, format="PNG")
    return buf.getvalue()


def _demo_bytes() -> bytes:
    from skimage import data

    from ..core.io import encode_png

    return encode_png(data.astronaut())
