"""Training and inference throughput of the learned methods (not a test: numbers depend on the machine).

Usage::

    python benchmarks/bench_train.py [--methods region-attentive,unet-l1] [--configs small] [--device cpu]
                                     [--steps 6] [--predict-n 64]

For each (method, config) it builds the networks and the loss network exactly as ``maskbench train`` does,
runs ``--steps`` optimisation steps on random batches at the config's size and batch size (the first step is
warm-up and not timed), and prints training images/s; then it times the predictor (``predict`` at 256 px
input, the model's own size inside) on ``--predict-n`` images. Run it on a quiet machine: on 2 cores a
neighbouring job halves the figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from maskbench.methods import predictors as P  # noqa: E402
from maskbench.methods.learned import trainer_class  # noqa: E402
from maskbench.train.checkpoint import export_weights  # noqa: E402
from maskbench.train.data import to_batch  # noqa: E402
from maskbench.train.loop import Optimizers  # noqa: E402


def _batch(n: int, s: int, device: str):
    rng = np.random.default_rng(0)
    orig = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    hole = np.zeros((n, s, s), bool)
    hole[:, s // 2:, s // 4: 3 * s // 4] = True
    return to_batch(np.where(hole[..., None], 128, orig).astype(np.uint8), orig, hole, np.arange(n), device)


def bench(method: str, config: str, device: str, steps: int, predict_n: int) -> tuple[str, ...]:
    cls = P.get_predictor_class(method)
    T = trainer_class(cls)
    cfg = T.load_config(config)
    loss_net = None
    if T.uses_loss_network:
        from maskbench.train.losses import load_loss_network

        loss_net = load_loss_network(cfg["loss_network"], device)
    torch.manual_seed(0)
    m = T(cfg, device, loss_net)
    for net in m.nets.values():
        net.to(device).train()
    opt = Optimizers(m.param_groups(), cfg["optim"]["lr"], cfg["optim"]["betas"], m.lr_scales)
    b = _batch(cfg["batch_size"], cfg["size"], device)
    m.training_step(b, opt)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        m.training_step(b, opt)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    train_ips = steps * cfg["batch_size"] / (time.perf_counter() - t)
    params = sum(p.numel() for p in m.nets["generator"].parameters()) / 1e6
    with tempfile.TemporaryDirectory() as d:
        w = Path(d) / "w.safetensors"
        export_weights(w, method, {k: m.nets[k] for k in T.exported_nets(cfg)}, {"config": cfg})
        pred = P.create_predictor(method, device=device, weights=str(w))
        rng = np.random.default_rng(1)
        images = rng.integers(0, 256, (predict_n, 256, 256, 3), dtype=np.uint8)
        masks = np.zeros((predict_n, 256, 256), bool)
        masks[:, 128:, 64:192] = True
        P.run_predictor(pred, images[:2], masks[:2])
        t = time.perf_counter()
        P.run_predictor(pred, images, masks)
        pred_ips = predict_n / (time.perf_counter() - t)
    loss = getattr(loss_net, "name", "-")
    return (method, config, f"{params:.2f}", f"{cfg['size']}", f"{cfg['batch_size']}", loss, device,
            f"{train_ips:.2f}", f"{pred_ips:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="region-attentive,unet-l1")
    ap.add_argument("--configs", default="small", help="comma-separated config names, tried for every method")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--predict-n", type=int, default=64)
    a = ap.parse_args()
    head = ("method", "config", "G params (M)", "size", "batch", "loss net", "device", "train images/s",
            "predict images/s")
    rows = [bench(m, c, a.device, a.steps, a.predict_n) for m in a.methods.split(",") for c in a.configs.split(",")]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\n(torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
