"""Piecewise-affine warp of an image from the canonical frame onto a face's anchor points."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["PiecewiseAffineWarp"]


class PiecewiseAffineWarp:
    """Piecewise-affine warp from a canonical frame to a face, over a fixed Delaunay triangulation.

    The triangulation is computed once on the canonical points (``scipy.spatial.Delaunay``); for a target
    point set each triangle gets its own affine map (one batched ``numpy.linalg.solve``), every target pixel is
    labelled with the triangle covering it (``cv2.fillConvexPoly``, sub-pixel; a pixel
    between two triangles that neither covers takes a neighbour's triangle), and the source image is
    sampled once with ``cv2.remap`` (bilinear). Pixels outside every triangle become transparent.
    Where a turned head folds triangles over, the later triangle wins.

    Args:
        canonical_points: ``(K, 2)`` control points in the canonical frame, pixels.
        triangles: ``(T, 3)`` vertex indices to use instead of the Delaunay triangulation of
            ``canonical_points`` (e.g. another warp's, to map back along the same triangles).
    """

    def __init__(self, canonical_points: np.ndarray, triangles: np.ndarray | None = None):
        from scipy.spatial import Delaunay

        self.src = np.asarray(canonical_points, np.float64)
        if triangles is None:
            triangles = Delaunay(self.src).simplices
        self.triangles = np.asarray(triangles, np.int32)

    def folded(self, dst_points: np.ndarray) -> int:
        """How many triangles flip orientation between the canonical and ``dst_points`` (fold-overs)."""
        def orientation(p: np.ndarray) -> np.ndarray:
            d = np.asarray(p, np.float64)[self.triangles]
            return np.sign((d[:, 1, 0] - d[:, 0, 0]) * (d[:, 2, 1] - d[:, 0, 1])
                           - (d[:, 2, 0] - d[:, 0, 0]) * (d[:, 1, 1] - d[:, 0, 1]))

        return int((orientation(dst_points) != orientation(self.src)).sum())

    def __call__(
        self,
        image: np.ndarray,
        dst_points: np.ndarray,
        out_size: tuple[int, int],
        support: tuple[int, int, int, int] | None = None,
    ) -> np.ndarray:
        """Warp ``image`` (canonical frame) so its control points land on ``dst_points``.

        Args: as :meth:`window`.

        Returns:
            ``(H, W, C) float32``; zero outside the warped triangles.
        """
        h, w = out_size
        (y0, y1, x0, x1), out = self.window(image, dst_points, out_size, support)
        full = np.zeros((h, w, out.shape[2]), np.float32)
        full[y0:y1, x0:x1] = out
        return full

    def window(
        self,
        image: np.ndarray,
        dst_points: np.ndarray,
        out_size: tuple[int, int],
        support: tuple[int, int, int, int] | None = None,
        origin: tuple[int, int] = (0, 0),
    ) -> tuple[tuple[int, int, int, int], np.ndarray]:
        """Warp ``image`` (canonical frame) so its control points land on ``dst_points``; only the box the
        warped triangles cover is returned (the rest of the output is zero).

        Args:
            image: ``(Hs, Ws, C) float32`` source, e.g. premultiplied RGBA.
            dst_points: ``(K, 2)`` target control points, pixels.
            out_size: ``(H, W)`` of the output.
            support: ``(x0, y0, x1, y1)`` box of ``image`` outside which it is zero; only triangles that
                meet it are warped, and only over their target bounding box (a speed-up, same result
                except where a turned head folds an empty triangle over a non-empty one).
            origin: ``(x0, y0)``: ``image`` is the part of the canonical frame that starts there (a crop of
                it holding all of its non-zero pixels); ``support`` is still in canonical pixels.

        Returns:
            ``((y0, y1, x0, x1), patch)``: the box in output pixels (empty when nothing lands inside
            ``out_size``) and ``(y1 - y0, x1 - x0, C) float32``, zero outside the warped triangles.
        """
        h, w = out_size
        dst = np.asarray(dst_points, np.float64)
        n = len(self.triangles)
        active = np.arange(n)
        if support is not None:
            tri_src = self.src[self.triangles]
            lo, hi = tri_src.min(1), tri_src.max(1)
            meets = (hi[:, 0] >= support[0]) & (lo[:, 0] <= support[2]) & (hi[:, 1] >= support[1]) & (lo[:, 1] <= support[3])
            active = active[meets]
        pts = dst[self.triangles[active]].reshape(-1, 2)
        x0, y0 = np.clip(np.floor(pts.min(0)).astype(int) - 2, 0, [w, h]) if len(pts) else (0, 0)
        x1, y1 = np.clip(np.ceil(pts.max(0)).astype(int) + 3, 0, [w, h]) if len(pts) else (0, 0)
        channels = image.shape[2] if image.ndim == 3 else 1
        if x1 <= x0 or y1 <= y0:
            return (0, 0, 0, 0), np.zeros((0, 0, channels), np.float32)
        ww, wh = x1 - x0, y1 - y0
        inv = np.zeros((n + 1, 2, 3), np.float64)
        inv[n] = [[0, 0, -1e4], [0, 0, -1e4]]  # label n = outside: sample far off the source
        label = np.full((wh, ww), n, np.int32)
        shift = 4
        # every active triangle's target-to-source affine at once: [x y 1] @ A = source point, per vertex
        d_all = dst[self.triangles[active]] - (x0, y0)  # (k, 3, 2)
        e1, e2 = d_all[:, 1] - d_all[:, 0], d_all[:, 2] - d_all[:, 0]
        area = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
        ok = np.abs(area) >= 1e-6
        active, d_all = active[ok], d_all[ok]
        if len(active):
            lhs = np.concatenate([d_all, np.ones(d_all.shape[:2] + (1,))], axis=2)  # (k, 3, 3)
            inv[active] = np.linalg.solve(lhs, self.src[self.triangles[active]]).transpose(0, 2, 1)
        fixed = np.round(d_all * (1 << shift)).astype(np.int32)
        for t, poly in zip(active, fixed):
            cv2.fillConvexPoly(label, poly, int(t), cv2.LINE_8, shift)
        # a pixel on a shared edge that sub-pixel filling gave to neither triangle takes a neighbour's label
        gap = label == n
        if gap.any():
            known = np.where(gap, -1, label).astype(np.float32)
            grown = cv2.dilate(known, np.ones((3, 3), np.uint8)).astype(np.int32)
            fill = gap & (grown >= 0)
            label[fill] = grown[fill]
        xs = np.arange(ww, dtype=np.float32)[None, :]  # window coordinates, as the affines expect
        ys = np.arange(wh, dtype=np.float32)[:, None]
        m = inv.reshape(n + 1, 6).astype(np.float32).T  # one small table per coefficient, gathered per pixel
        map_x = m[0][label] * xs + m[1][label] * ys + (m[2] - np.float32(origin[0]))[label]
        map_y = m[3][label] * xs + m[4][label] * ys + (m[5] - np.float32(origin[1]))[label]
        out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return (int(y0), int(y1), int(x0), int(x1)), out.reshape(wh, ww, channels)
