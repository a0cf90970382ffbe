"""Synthesis throughput on real faces: faces per second, detection and landmarks included.

    python benchmarks/bench_synth.py --data-dir ../shared/data/celeba-id200 [--limit 600] [--workers 1 2]
        [--templates procedural photo mix] [--engine local ray] [--no-profile]

Each row is one fresh ``synthesize`` run (new output folder) over the same CelebA images at --size,
timed from the first image to the finished tables (worker start-up included). A per-stage profile of
one process follows, so a slow stage is easy to spot. Target (issue 2): >= 60 faces/s with 2 workers
on a 2-core machine at 256 px; photo templates (issue 24) no slower than procedural ones, in one run.

With ``--engine ray`` a row follows for ``--engine ray`` on a local Ray with this machine's CPUs (one actor
per CPU), timed like the others (actor start-up included); starting Ray itself is timed apart, and the row
gives its overhead over the last ``--workers`` row: 1 - (Ray's faces/s) / (the workers' faces/s). Target
(issue 26): <= 15 % at 600 faces beside ``--workers 2`` on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from maskbench.data.sources import resolve_source
from maskbench.data.synth import MaskSynthesizer, SynthConfig, sample_seed, synthesize


def stage_profile(source, config: SynthConfig, n: int) -> dict[str, float]:
    """Milliseconds per face for each stage, in one process."""
    from maskbench.core.io import decode_image, encode_png, jpeg_quality
    from maskbench.faces.landmarks import affine_scale, align_ffhq, transform_points

    syn = MaskSynthesizer(config)
    t = dict.fromkeys(["decode", "detect+landmarks", "align", "mask (render+warp+composite+jpeg)",
                       "png encode (writer thread)"], 0.0)
    done = 0
    for item in source.items[:n]:
        t0 = time.perf_counter()
        data = item.read_bytes()
        img = decode_image(data)
        quality = jpeg_quality(data)
        t1 = time.perf_counter()
        try:
            det = syn.detector(img)
        except LookupError:
            continue
        t2 = time.perf_counter()
        face, m = align_ffhq(img, det.landmarks, config.size)
        lm = transform_points(det.landmarks, m)
        jpeg = None if quality is None else (quality, affine_scale(m))
        t3 = time.perf_counter()
        rng = np.random.default_rng(sample_seed(0, item.source_id, 0))
        res = syn.mask_face(face, lm, rng, config.mask_types[done % len(config.mask_types)], jpeg)
        t4 = time.perf_counter()
        for a in (res["masked"], face, res["hole"].astype(np.uint8) * 255):
            encode_png(a)
        t5 = time.perf_counter()
        for k, (a, b) in zip(t, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)]):
            t[k] += b - a
        done += 1
    return {k: 1000 * v / max(done, 1) for k, v in t.items()}


def ray_row(source, config: SynthConfig, limit: int, local_rate: float | None) -> None:
    """The ``--engine ray`` row: a local Ray started first (timed apart), then one fresh run on its actors."""
    from maskbench.core.cluster import RayEngine
    from maskbench.data.synth_ray import RaySynthEngine

    engine = RayEngine()
    engine.connect()
    try:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            r = synthesize(source, out, config, limit=limit, engine=RaySynthEngine(engine), progress=False)
            dt = time.perf_counter() - t0
    finally:
        engine.close()
    n = r.written + sum(r.skipped.values())
    label = f"ray x{engine.actors_started}"
    over = f"   overhead {1 - n / dt / local_rate:+.1%} vs the row above" if local_rate else ""
    print(f"{config.templates:>10} {label:>8} {r.written:>7} {sum(r.skipped.values()):>8} {dt:>8.2f} {n / dt:>8.1f}{over}"
          f"   (Ray start-up {engine.startup_s:.1f} s, not in the row)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("MASKBENCH_CELEBA", "../shared/data/celeba-id200"))
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cold", action="store_true", help="do not fill the texture disk cache first")
    ap.add_argument("--templates", nargs="+", default=["procedural"],
                    help="template kinds to time in turn (procedural, photo, mix; see SynthConfig.templates)")
    ap.add_argument("--engine", nargs="+", choices=["local", "ray"], default=["local"],
                    help="local: the --workers rows; ray: also a row on a local Ray (needs the ray extra)")
    ap.add_argument("--no-profile", action="store_true", help="skip the per-stage profile")
    args = ap.parse_args()

    source = resolve_source("celeba", args.data_dir)
    config = SynthConfig(size=args.size)
    print(f"maskbench synthesis benchmark: {args.limit} CelebA images, --size {args.size}, {os.cpu_count()} CPUs")
    if not args.cold:  # the steady state of a machine that has synthesized once: every texture drawn and kept
        from maskbench.data.masks import TextureBank

        t0 = time.perf_counter()
        bank = TextureBank()
        for tid in bank.ids:
            bank.image(tid, args.size)
        print(f"texture cache warm ({len(bank.ids)} textures, {time.perf_counter() - t0:.1f} s; --cold skips this)")
    print(f"{'templates':>10} {'workers':>8} {'faces':>7} {'skipped':>8} {'seconds':>8} {'faces/s':>8}")
    for kind in args.templates:
        rate = None
        for w in args.workers:
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                r = synthesize(source, out, SynthConfig(size=args.size, templates=kind), limit=args.limit, workers=w,
                               progress=False)
                dt = time.perf_counter() - t0
            n = r.written + sum(r.skipped.values())
            rate = n / dt
            print(f"{kind:>10} {w:>8} {r.written:>7} {sum(r.skipped.values()):>8} {dt:>8.2f} {n / dt:>8.1f}")
        if "ray" in args.engine:
            ray_row(source, SynthConfig(size=args.size, templates=kind), args.limit, rate)
    if args.no_profile:
        return
    print("\nper-stage time, one process (ms per face):")
    for k, v in stage_profile(source, config, min(args.limit, 200)).items():
        print(f"  {k:<32} {v:6.2f}")


if __name__ == "__main__":
    main()
