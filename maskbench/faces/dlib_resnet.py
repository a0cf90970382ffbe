"""dlib's 128-D face-recognition ResNet, re-implemented in PyTorch, weights read from dlib's own file.

The network is ``dlib_face_recognition_resnet_model_v1.dat`` (King, dlib 19.x, 2017; 99.38% on LFW;
architecture in ``dlib/examples/dnn_face_recognition_ex.cpp``): a 29-conv ResNet on 150 x 150 RGB chips
with a 128-D output. :func:`parse_dlib_dat` reads dlib's binary serialisation directly (``dlib/serialize.h``,
``dlib/dnn/*.h``; no pickle, no dlib import) and :class:`DlibFaceResNet` reproduces
``dlib.face_recognition_model_v1.compute_face_descriptor`` (``num_jitters=0``) to 6e-7 (max over 200
CelebA chips; ``tests/test_metrics.py`` checks 1e-5), several times faster than dlib's CPU build without BLAS,
batched, and on CUDA when there is one.

dlib semantics reproduced: strided 3x3 convolutions and the pools have no padding and use dlib's
truncating output-size formula ``1 + (n + 2p - k) / s`` (so a 3x3/2 convolution of a 2x2 map reads one
zero row/column past the edge); ``add_prev`` of tensors of different channel count or size adds them
top-left aligned with zero extension; the input is ``(pixel - average colour) / 256`` with the averages
stored in the file (122.782, 117.001, 104.298). Each convolution's following ``affine`` layer is folded
into its weights.
"""

from __future__ import annotations

import os
from typing import Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.errors import MaskbenchError

__all__ = ["load_dlib_resnet", "DlibFaceResNet", "parse_dlib_dat", "DlibFormatError"]


class DlibFormatError(MaskbenchError, ValueError):
    """The file is not a dlib face-recognition ResNet this module can read."""


class _Reader:
    def __init__(self, data: bytes):
        self.b = data
        self.p = 0

    def _take(self, n: int) -> bytes:
        if self.p + n > len(self.b):
            raise DlibFormatError(f"dlib .dat truncated at offset {self.p}")
        s = self.b[self.p:self.p + n]
        self.p += n
        return s

    def int(self) -> int:
        # pack_int: first byte = nbytes | (0x80 if negative); then |value| little endian.
        h = self.b[self.p]
        self.p += 1
        n = h & 0x0F
        if n > 8:
            raise DlibFormatError(f"bad int header 0x{h:02x} at {self.p - 1}")
        v = int.from_bytes(self._take(n), "little")
        return -v if h & 0x80 else v

    def float(self) -> float:
        # serialize_floating_point: int64 mantissa, int16 exponent; value = m * 2**e.
        m = self.int()
        e = self.int()
        # special values (float_details): is_inf/is_nan encoded via exponent sentinels
        if e == 32000:
            return float("inf") if m >= 0 else float("-inf")
        if e == 32001:
            return float("nan")
        return float(np.ldexp(float(m), e))

    def bool(self) -> bool:
        c = self._take(1)
        if c == b"1":
            return True
        if c == b"0":
            return False
        raise DlibFormatError(f"bad bool {c!r} at {self.p - 1}")

    def string(self) -> str:
        n = self.int()
        return self._take(n).decode("latin-1")

    def tensor(self) -> np.ndarray:
        ver = self.int()
        n, k, nr, nc = self.int(), self.int(), self.int(), self.int()
        size = n * k * nr * nc
        if ver == 2:  # raw little-endian IEEE float32
            arr = np.frombuffer(self._take(4 * size), dtype="<f4").astype(np.float32)
        elif ver == 1:  # dlib portable float encoding per element
            arr = np.array([self.float() for _ in range(size)], dtype=np.float32)
        else:
            raise DlibFormatError(f"unknown tensor version {ver} at {self.p}")
        return arr.reshape(n, k, nr, nc)

    def alias_tensor(self) -> Tuple[int, int, int, int]:
        ver = self.int()
        if ver != 1:
            raise DlibFormatError(f"unknown alias_tensor version {ver}")
        return (self.int(), self.int(), self.int(), self.int())


def _parse_layer_details(r: _Reader) -> dict:
    name = r.string()
    d = {"type": name}
    if name == "con_4":
        params = r.tensor().reshape(-1)
        nf, nr, nc = r.int(), r.int(), r.int()
        sy, sx, py, px = r.int(), r.int(), r.int(), r.int()
        filt = r.alias_tensor()
        bias = r.alias_tensor()
        for _ in range(4):  # lr / wd multipliers
            r.float()
        nw = int(np.prod(filt))
        w = params[:nw].reshape(filt)  # (num_filters, k, nr, nc)
        b = params[nw:nw + int(np.prod(bias))].reshape(-1)
        if w.shape[0] != nf or w.shape[2] != nr or w.shape[3] != nc:
            raise DlibFormatError(f"con layer: filter shape {w.shape} does not match {nf}x{nr}x{nc}")
        d.update(weight=w, bias=b, stride=(sy, sx), padding=(py, px))
    elif name == "affine_":
        params = r.tensor().reshape(-1)
        g = r.alias_tensor()
        bt = r.alias_tensor()
        mode = r.int()
        ng = int(np.prod(g))
        d.update(gamma=params[:ng].copy(), beta=params[ng:ng + int(np.prod(bt))].copy(), mode=mode)
    elif name in ("relu_", "add_prev_"):
        pass
    elif name in ("max_pool_2", "avg_pool_2"):
        nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
        d.update(size=(nr, nc), stride=(sy, sx), padding=(py, px))
    elif name == "fc_2":
        nout, nin = r.int(), r.int()
        params = r.tensor().reshape(-1)
        wa = r.alias_tensor()
        ba = r.alias_tensor()
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        nw = int(np.prod(wa))
        # dlib: output = input(N x nin) * W(nin x nout)
        d.update(weight=params[:nw].reshape(nin, nout).copy(),
                 bias=params[nw:nw + int(np.prod(ba))].copy() if int(np.prod(ba)) else None,
                 bias_mode=bias_mode)
    else:
        raise DlibFormatError(f"unsupported dlib layer type {name!r} at offset {r.p}")
    return d


def parse_dlib_dat(path: str | os.PathLike) -> dict:
    """Parse dlib's ``anet_type`` serialisation.

    Returns:
        ``{"input": {"avg", "nr", "nc"}, "layers": [layer dicts, bottom to top], "loss": {...}}``; layer
        weights are float32 numpy arrays.

    Raises:
        DlibFormatError: an unexpected layer type or version, or bytes left over.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        r = _Reader(f.read())
    # add_loss_layer: version, loss details, subnet
    if r.int() != 1:
        raise DlibFormatError("unexpected add_loss_layer version")
    loss = r.string()
    if loss != "loss_metric_2":
        raise DlibFormatError(f"unexpected loss {loss}")
    margin, dist_thresh = r.float(), r.float()
    # Each add_layer / add_tag_layer / add_skip_layer writes its version and then its
    # subnetwork *before* its own details, so the stream starts with the versions of all
    # layers from top to bottom (2 = add_layer, 1 = tag/skip, 3 = add_layer over the input
    # layer), followed by the layer details from the bottom (input) to the top.
    n_add = n_tagskip = 0
    while True:
        v = r.int()
        if v == 2:
            n_add += 1
        elif v == 1:
            n_tagskip += 1
        elif v == 3:
            break
        else:
            raise DlibFormatError(f"unexpected layer version {v} at {r.p}")
    inp_name = r.string()
    if inp_name != "input_rgb_image_sized":
        raise DlibFormatError(inp_name)
    avg = (r.float(), r.float(), r.float())
    nr, nc = r.int(), r.int()
    layers = [_parse_layer_details(r)]
    # trailer of the input add_layer (version 3)
    r.bool(); r.bool(); r.bool()
    r.tensor(); r.tensor(); r.tensor()  # x_grad, cached_output, grad_final
    r.int()  # _sample_expansion_factor
    for _ in range(n_add):
        layers.append(_parse_layer_details(r))
        r.bool(); r.bool(); r.bool()
        r.tensor(); r.tensor(); r.tensor()  # x_grad, cached_output, params_grad
    if r.p != len(r.b):
        raise DlibFormatError(f"{len(r.b) - r.p} trailing bytes after parsing")
    return {"input": {"avg": avg, "nr": nr, "nc": nc}, "layers": layers,
            "loss": {"margin": margin, "dist_thresh": dist_thresh},
            "n_tagskip": n_tagskip}


# ----------------------------------------------------------------------------------------
# torch modules
# ----------------------------------------------------------------------------------------

def _dlib_out(n: int, k: int, s: int, p: int) -> int:
    # dlib: 1 + (n + 2p - k) / s with C++ truncating division
    return 1 + int((n + 2 * p - k) / s)


class _DlibConv(nn.Module):
    """Conv + fused affine (conv bias and per-channel gamma/beta folded into the conv)."""

    def __init__(self, conv: dict, affine: dict):
        super().__init__()
        w = torch.from_numpy(conv["weight"].astype(np.float32))
        b = torch.from_numpy(conv["bias"].astype(np.float32)) if conv["bias"].size else torch.zeros(w.shape[0])
        g = torch.from_numpy(affine["gamma"].astype(np.float32)).reshape(-1)
        bt = torch.from_numpy(affine["beta"].astype(np.float32)).reshape(-1)
        # affine(con(x)) = g*(W*x + b) + beta = (g*W)*x + (g*b + beta)
        self.weight = nn.Parameter((w * g.view(-1, 1, 1, 1)).contiguous(), requires_grad=False)
        self.bias = nn.Parameter(g * b + bt, requires_grad=False)
        self.stride = tuple(conv["stride"])
        self.padding = tuple(conv["padding"])
        self.k = tuple(w.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        py, px = self.padding
        H, W = x.shape[-2:]
        oh = _dlib_out(H, self.k[0], self.stride[0], py)
        ow = _dlib_out(W, self.k[1], self.stride[1], px)
        # extra bottom/right zero padding where dlib's truncating size formula reads past
        # the edge (only happens for tiny inputs, e.g. 2x2 with a 3x3/2 kernel)
        need_h = (oh - 1) * self.stride[0] + self.k[0] - (H + 2 * py)
        need_w = (ow - 1) * self.stride[1] + self.k[1] - (W + 2 * px)
        if need_h > 0 or need_w > 0:
            x = F.pad(x, (0, max(need_w, 0), 0, max(need_h, 0)))
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib tt::add(dest, a, b): dest has the max shape; top-left aligned, zero extended."""
    if a.shape == b.shape:
        return a + b
    C = max(a.shape[1], b.shape[1])
    H = max(a.shape[2], b.shape[2])
    W = max(a.shape[3], b.shape[3])

    def ext(t):
        return F.pad(t, (0, W - t.shape[3], 0, H - t.shape[2], 0, C - t.shape[1]))

    return ext(a) + ext(b)


class _Residual(nn.Module):
    def __init__(self, c1: _DlibConv, c2: _DlibConv, down: bool, pool: dict | None):
        super().__init__()
        self.c1, self.c2, self.down = c1, c2, down
        if down:
            self.pk, self.ps, self.pp = tuple(pool["size"]), tuple(pool["stride"]), tuple(pool["padding"])
            if self.pp != (0, 0):
                raise DlibFormatError(f"padded avg_pool {self.pp} is not supported")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c2(F.relu(self.c1(x)))
        if self.down:
            x = F.avg_pool2d(x, self.pk, self.ps)
        return F.relu(_add_prev(y, x))


class DlibFaceResNet(nn.Module):
    """The network of :func:`parse_dlib_dat`'s ``spec``, eval mode, no gradients.

    ``forward(x)``: ``x`` is ``(N, 3, 150, 150)`` RGB on the 0-255 scale (float or uint8 tensor); returns
    ``(N, 128) float32`` descriptors, as dlib's (not L2-normalised; norms are about 1.5).

    Raises:
        DlibFormatError: ``spec`` does not have this architecture (constructor).
    """

    def __init__(self, spec: dict):
        super().__init__()
        L = spec["layers"]
        avg = spec["input"]["avg"]
        self.register_buffer("mean", torch.tensor(avg, dtype=torch.float32).view(1, 3, 1, 1))
        self.input_size = (spec["input"]["nr"], spec["input"]["nc"])
        i = 0

        def take(t):
            nonlocal i
            if L[i]["type"] != t:
                raise DlibFormatError(f"layer {i}: expected {t}, found {L[i]['type']}")
            i += 1
            return L[i - 1]

        self.stem = _DlibConv(take("con_4"), take("affine_"))
        take("relu_")
        mp = take("max_pool_2")
        self.mp_k, self.mp_s, self.mp_p = tuple(mp["size"]), tuple(mp["stride"]), tuple(mp["padding"])
        if self.mp_p != (0, 0):
            raise DlibFormatError(f"padded max_pool {self.mp_p} is not supported")
        blocks = []
        while L[i]["type"] == "con_4":
            c1 = _DlibConv(take("con_4"), take("affine_"))
            take("relu_")
            c2 = _DlibConv(take("con_4"), take("affine_"))
            pool = None
            if L[i]["type"] == "avg_pool_2":
                pool = take("avg_pool_2")
            take("add_prev_")
            take("relu_")
            blocks.append(_Residual(c1, c2, pool is not None, pool))
        self.blocks = nn.ModuleList(blocks)
        gp = take("avg_pool_2")
        if gp["size"] != (0, 0):  # (0, 0) = avg_pool_everything
            raise DlibFormatError(f"expected a global average pool, found {gp['size']}")
        fc = take("fc_2")
        if fc["bias"] is not None and fc["bias"].size:
            raise DlibFormatError("expected fc_no_bias")
        self.fc_weight = nn.Parameter(torch.from_numpy(fc["weight"].T.copy()), requires_grad=False)
        if i != len(L):
            raise DlibFormatError(f"{len(L) - i} unexpected layers after the fc layer")
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N,3,150,150) RGB in 0..255 scale (float or uint8). Returns (N,128)."""
        x = x.to(self.mean.dtype)
        x = (x - self.mean) * (1.0 / 256.0)
        x = F.relu(self.stem(x))
        x = F.max_pool2d(x, self.mp_k, self.mp_s)
        for blk in self.blocks:
            x = blk(x)
        x = x.mean(dim=(2, 3))
        return F.linear(x, self.fc_weight)


def load_dlib_resnet(path: str | os.PathLike) -> DlibFaceResNet:
    """Load ``dlib_face_recognition_resnet_model_v1.dat`` into an eval-mode :class:`DlibFaceResNet`.

    Raises:
        DlibFormatError: not a file of this network.
        OSError: the file cannot be read.
    """
    return DlibFaceResNet(parse_dlib_dat(path)).eval()
