"""How well does each identity recognizer separate people? Prints a table for the README.

On a Masked-Faces folder (both splits; every record has ``identity`` and landmarks), embeds up to
``--per-identity`` original photos per person with each recognizer and reports, for the cosine of
same-person and different-person pairs: mean, 1st / 99th percentile, and the error rates at the
recognizer's published threshold (false non-match rate on same-person pairs, false match rate on
different-person pairs); plus the mean cosine of each masked input to its own original.

    python benchmarks/identity_separation.py --data data/celeba-masked --models sface,dlib
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from maskbench.data.dataset import MaskedFaces
from maskbench.faces.identity import cosine_similarity, load_identity_model


def _pick(data: str, per_identity: int) -> list[tuple[MaskedFaces, int]]:
    chosen, count = [], defaultdict(int)
    for split in ("test", "train"):
        try:
            ds = MaskedFaces(data, split)
        except ValueError:
            continue
        for i, r in enumerate(ds.records):
            ident = r.get("identity")
            if ident is not None and count[ident] < per_identity:
                count[ident] += 1
                chosen.append((ds, i))
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="Masked-Faces folder (maskbench synth output)")
    ap.add_argument("--models", default="sface,dlib", help="comma-separated recognizer names")
    ap.add_argument("--per-identity", type=int, default=15)
    args = ap.parse_args()
    picks = _pick(args.data, args.per_identity)
    samples = [ds[i] for ds, i in picks]
    ids = np.array([s.record["identity"] for s in samples])
    lms = np.array([s.record["landmarks"] for s in samples], np.float64)
    orig = np.stack([s.original for s in samples])
    masked = np.stack([s.masked for s in samples])
    same = ids[:, None] == ids[None, :]
    upper = np.triu(np.ones_like(same), 1)
    print(f"{len(samples)} faces of {len(set(ids))} identities")
    print("| recognizer | same person: mean [p1, p99] | different people: mean [p1, p99] | threshold | "
          "false non-match | false match | masked input vs original |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = load_identity_model(name.strip())
        e = model.embed(orig, lms)
        en = e / np.linalg.norm(e, axis=1, keepdims=True)
        cos = en @ en.T
        s, d = cos[same & upper], cos[~same & upper]
        m_cos = cosine_similarity(e, model.embed(masked, lms)).mean()
        if model.threshold is None:
            thr, fnmr, fmr = "none", "", ""
        else:
            if model.threshold_kind == "euclidean":
                dist = np.linalg.norm(e[:, None] - e[None], axis=-1)
                hit = dist < model.threshold
            else:
                hit = cos >= model.threshold
            thr = f"{model.threshold_kind} {'<' if model.threshold_kind == 'euclidean' else '>='} {model.threshold}"
            fnmr = f"{1 - hit[same & upper].mean():.1%}"
            fmr = f"{hit[~same & upper].mean():.2%}"
        print(f"| {model.name} | {s.mean():.3f} [{np.percentile(s, 1):.3f}, {np.percentile(s, 99):.3f}] | "
              f"{d.mean():.3f} [{np.percentile(d, 1):.3f}, {np.percentile(d, 99):.3f}] | {thr} | {fnmr} | {fmr} | "
              f"{m_cos:.3f} |")


if __name__ == "__main__":
    main()
