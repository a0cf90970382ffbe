"""Throughput of the scoring pipeline, measured in one run (not a test: numbers depend on the machine).

Usage::

    python benchmarks/bench_evaluate.py [--data DIR] [--celeba DIR] [--n 256] [--batch-size 32] [--device cpu]

``--data`` is a Masked-Faces dataset folder (``maskbench synth`` output); without it a stand-in dataset
is written from ``--celeba`` (default ``$MASKBENCH_TEST_DATA/celeba-id200``) at 256 x 256 with
:func:`maskbench.data.testing.write_fake_dataset`. Prints one table:

- ``pixel metrics``: L1 + PSNR + SSIM (whole image and hole) on decoded 256 px composites, scored in
  batches by the evaluator's thread pool (target >= 200 images/s on a 2-core CPU);
- ``inception only``: the FID Inception forward alone on the same batches;
- ``identity forward only``: the SFace recognizer alone on the 112 px chips of the same originals, by
  both runtimes in the same run (:class:`maskbench.faces.identity.SFaceIdentity`): ``onnxruntime`` (the
  int8 file one chip at a time, the path before OpenCV's) and ``opencv`` (the default), with their ratio
  and each one's ratio to Inception. A pipeline run embeds one chip per image when the originals'
  embeddings are cached (warm), two otherwise (cold); the slower of Inception and the recognizer bounds
  a run with identity (target for the recognizer: >= 150 chips/s on a quiet 2-core CPU);
- ``pipeline``: ``maskbench.bench.evaluate`` end to end with the ``masked-input`` method (decode, predict,
  composite, pixel metrics, FID features, identity) and its ratio to Inception-only throughput (target
  >= 0.70): ``cold`` is a dataset's first evaluation (it also computes the reference statistics and
  original-face embeddings), ``warm`` a later one (both cached), ``warm, no identity`` without the
  identity embedder. "steady" times the batch loop; "whole call" includes model loading and the final
  FID/summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from maskbench.bench.evaluate import EvalConfig, evaluate  # noqa: E402
from maskbench.data.dataset import MaskedFaces  # noqa: E402
from maskbench.data.testing import write_fake_dataset  # noqa: E402
from maskbench.faces.identity import SFaceIdentity  # noqa: E402
from maskbench.measures.fid import InceptionFeatures  # noqa: E402
from maskbench.measures.metrics import image_scores  # noqa: E402

W = 58  # width of the stage column


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="Masked-Faces dataset folder")
    ap.add_argument("--celeba", type=Path, default=Path(os.environ.get("MASKBENCH_TEST_DATA", "")) / "celeba-id200")
    ap.add_argument("--n", type=int, default=256, help="images to use")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="maskbench-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["MASKBENCH_CACHE"] = str(tmp / "cache")  # cold caches, nothing outside tmp
        data = args.data
        if data is None:
            if not (args.celeba / "img_align_celeba").is_dir():
                print(f"no --data and no CelebA folder at {args.celeba}", file=sys.stderr)
                return 2
            t = time.perf_counter()
            data = write_fake_dataset(tmp / "data", args.n, source=args.celeba)
            print(f"built stand-in dataset ({args.n} faces, 256 px) in {time.perf_counter() - t:.1f} s")
        ds = MaskedFaces(data, "test", args.n)
        n = len(ds)
        bs = args.batch_size
        samples = [ds[i] for i in range(n)]
        h, w = samples[0].original.shape[:2]
        batches = []
        for s in range(0, n, bs):
            chunk = samples[s : s + bs]
            batches.append((np.stack([c.masked for c in chunk]), np.stack([c.original for c in chunk]),
                            np.stack([c.mask for c in chunk])))

        # 1. pixel metrics, batches scored in the evaluator's 2-thread pool
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda b: image_scores(b[0], b[1], b[2]), batches[:1]))  # warm-up
            t = time.perf_counter()
            list(pool.map(lambda b: image_scores(b[0], b[1], b[2]), batches))
            t_metrics = time.perf_counter() - t

        # 2. Inception forward alone, same batches (the composite of masked-input is the masked image)
        feats = InceptionFeatures(device=args.device)
        feats(batches[0][0][:2])  # warm-up
        t = time.perf_counter()
        for b in batches:
            feats(b[0])
        t_incep = time.perf_counter() - t
        del feats

        # 3. the recognizer's forward alone, both runtimes on the same chips (cut outside the timing)
        lms = np.array([ds.records[i]["landmarks"] for i in range(n)], np.float64)
        t_ident, cpu_ident = {}, {}
        for runtime in ("onnxruntime", "opencv"):
            ident = SFaceIdentity(device=args.device, runtime=runtime)
            chips = ident.chips(np.stack([c.original for c in samples]), lms)
            ident.embed_chips(chips[:2])  # warm-up
            t, c = time.perf_counter(), time.process_time()
            for s in range(0, n, bs):
                ident.embed_chips(chips[s : s + bs])
            t_ident[runtime], cpu_ident[runtime] = time.perf_counter() - t, time.process_time() - c
            del ident

        # 4. whole pipeline: cold (computes reference stats + embeddings), then warm (cached), then
        #    warm without identity. "steady" = the batch loop, from the first to the last progress call
        #    (excludes model loading and the final FID / summary, which are per run, not per image).
        cfg = dict(method="masked-input", data=str(data), limit=args.n, batch_size=bs, device=args.device)
        runs = {}
        for label, extra in (("cold", {}), ("warm", {}), ("warm, no identity", {"identity": False})):
            marks: list[float] = []
            t = time.perf_counter()
            res = evaluate(EvalConfig(out=str(tmp / label.replace(" ", "_").replace(",", "")), **cfg, **extra),
                           on_progress=lambda done, total: marks.append(time.perf_counter()))
            runs[label] = (time.perf_counter() - t, marks[-1] - marks[0], res)

    import torch

    print(f"\n{n} images, {w}x{h}, batch {bs}, device {args.device}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average "
          f"{os.getloadavg()[0]:.1f} (a busy machine slows every stage; compare ratios within one run)")
    print(f"{'stage':{W}s} {'images/s':>8s}")
    print(f"{'pixel metrics (L1+PSNR+SSIM, whole + hole)':{W}s} {_rate(n, t_metrics)}   target >= 200")
    print(f"{'inception forward only':{W}s} {_rate(n, t_incep)}")
    for runtime, label in (("onnxruntime", "old: onnxruntime int8, 1 chip/run"),
                           ("opencv", "new: OpenCV DNN, batched")):
        name = f"identity forward only ({label})"
        print(f"{name:{W}s} {_rate(n, t_ident[runtime])}   chips/s; ratio to inception "
              f"{t_incep / t_ident[runtime]:.2f}; {n / cpu_ident[runtime]:.1f} chips per CPU-second")
    print(f"{'identity forward, new / old (same run)':{W}s} {t_ident['onnxruntime'] / t_ident['opencv']:8.2f}x"
          "   target >= 150 chips/s on a quiet 2-core CPU")
    for label, (total, steady, _) in runs.items():
        name = f"pipeline ({label}), steady"
        print(f"{name:{W}s} {_rate(n, steady)}   ratio to inception {t_incep / steady:.2f} (target >= 0.70);"
              f" whole call {_rate(n, total).strip()}/s")
    res = runs["warm"][2]
    print(f"identity model: {res.summary['identity_model']}; FID {res.summary['fid']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
