"""Can a mask-type classifier trained on the synthetic labels label real photos? (issue 24, the harvest's types)

    python benchmarks/bench_type_classifier.py DATASET [--real ../shared/data/real-masked-dev]

Trains standardised ``LogisticRegression(C=0.1)`` on the realism crops' Inception features
(:mod:`maskbench.data.realism`: YuNet crop, FID network pool features; cached) of up to 1,000 masked faces of a
Masked-Faces ``DATASET`` with their ``mask_type``, predicts the harvest-half photos of real-masked-dev, and prints
the accuracy and the confusion matrix against ``mask_templates/photo/types.csv`` (labelled by looking).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from maskbench.core.io import read_csv_rows
from maskbench.data.format import MASK_TYPES
from maskbench.data.realism import FaceCropper, folder_set, real_split_files, set_features, synth_set
from maskbench.measures.fid import InceptionFeatures

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", help="a maskbench synth folder (its masked images and mask types train the classifier)")
    ap.add_argument("--real", default="../shared/data/real-masked-dev")
    ap.add_argument("--types", default=str(ROOT / "mask_templates" / "photo" / "types.csv"))
    args = ap.parse_args()

    cropper, net = FaceCropper(), InceptionFeatures(device="cpu")
    syn = synth_set(args.dataset, limit=1000, seed=0)
    fs = set_features(syn, cropper, net)
    real = folder_set(args.real, limit=None, only=real_split_files(None, "harvest"), name="real harvest half")
    fr = set_features(real, cropper, net)
    labels = {r["file"]: r["type"] for r in read_csv_rows(args.types)}
    unreadable = set(fr.unreadable)
    names = [p.name for p in real.paths if str(p) not in unreadable]
    keep = [i for i, n in enumerate(names) if labels.get(n) in MASK_TYPES]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(fs.features, np.array(fs.tags))
    pred = clf.predict(fr.features[keep])
    true = np.array([labels[names[i]] for i in keep])
    majority = max(np.mean(true == t) for t in MASK_TYPES)
    print(f"trained on {len(fs.tags)} synthetic faces of {args.dataset}; {len(keep)} labelled real photos")
    print(f"accuracy {np.mean(pred == true):.3f} (majority class {majority:.3f}, uniform guess 0.200)")
    print("confusion (rows: label by eye, columns: predicted) " + " ".join(f"{t:>8}" for t in MASK_TYPES))
    for t, row in zip(MASK_TYPES, confusion_matrix(true, pred, labels=list(MASK_TYPES))):
        print(f"{t:>50} " + " ".join(f"{v:>8}" for v in row))


if __name__ == "__main__":
    main()
