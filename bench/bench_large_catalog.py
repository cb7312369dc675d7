"""Peak memory and time of BERT4Rec training steps, from a 1,000,000-item catalogue down to ML-1M.

One step = masking + forward + loss + backward + AdamW step, at hidden 64, 2 blocks, 2 heads, max_len 200,
batch 128, mask probability 0.2, on full-length sequences (the slowest batches of an epoch).

* default: 1,000,000 items, sampled softmax with 1024 popularity-sampled negatives and logQ. Bar: peak
  RSS <= 4 GiB. Each variant (AdamW foreach / fused) runs in a fresh subprocess that reports its own peak
  RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``): tracemalloc does not see torch's allocations.
* ``--preset ml1m``: the published ML-1M configuration (3416 items, full softmax) in float32 and under
  bfloat16 autocast; reports ms per step. Bar: the 25 s/epoch budget leaves ~0.5 s per full-length step.

    .venv/bin/python bench/bench_large_catalog.py
    .venv/bin/python bench/bench_large_catalog.py --preset ml1m --steps 10

Prints one line per variant and one JSON line per variant (``{"bench": "large_catalog", ...}``).
Timings on a shared machine vary; the min over steps is the figure least disturbed by other processes.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GIB = 1024**3
RSS_BAR_GIB = 4.0
ML1M_STEP_BAR_S = 0.5


def _current_rss_bytes() -> int:
    """Current RSS, from /proc (Linux); 0 elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One configuration, measured inside this (fresh) process."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from recsys.config import FullSoftmaxLoss, LossConfig, MaskingConfig, ModelConfig, SampledSoftmaxLoss
    from recsys.model import BERT4Rec, build_loss, mask_items

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rss_import = _current_rss_bytes()

    n_items = args.n_items
    model = BERT4Rec(
        n_items,
        ModelConfig(
            hidden_size=64, n_layers=2, n_heads=2, max_len=args.max_len, dropout=0.1, attention_dropout=0.1
        ),
    )
    model.train()
    # Zipf-like popularity, so that popularity sampling and logQ are exercised as in real catalogues.
    counts = torch.zeros(n_items + 2, dtype=torch.long)
    counts[1 : n_items + 1] = (1e6 / torch.arange(1, n_items + 1, dtype=torch.float64)).long() + 1
    loss_cfg: LossConfig = (
        FullSoftmaxLoss()
        if args.loss == "softmax"
        else SampledSoftmaxLoss(n_negatives=args.negatives, sampling=args.sampling, logq_correction=True)
    )
    loss_fn = build_loss(loss_cfg, n_items, counts)
    fused = args.optimizer == "fused"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused, foreach=None if fused else True)
    rss_model = _current_rss_bytes()

    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, n_items + 1, (args.batch_size, args.max_len), generator=g)
    masking = MaskingConfig(mask_prob=0.2)
    bf16 = args.precision == "bf16"
    step_s: list[float] = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        inputs, labels = mask_items(items, n_items=n_items, cfg=masking, generator=g)
        positions = labels > 0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = model.hidden_at(inputs, positions)  # [M, d]
            loss = loss_fn(hidden, labels[positions], model, g)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    later = step_s[1:] or step_s  # the first step allocates the AdamW state and warms caches
    return {
        "bench": "large_catalog",
        "n_items": n_items,
        "params": sum(p.numel() for p in model.parameters()),
        "loss_fn": args.loss,
        "negatives": args.negatives if args.loss != "softmax" else None,
        "precision": args.precision,
        "optimizer": f"AdamW({args.optimizer})",
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        "masked_positions": int(positions.sum()),
        "threads": torch.get_num_threads(),
        "rss_after_import_gib": round(rss_import / GIB, 3),
        "rss_after_model_gib": round(rss_model / GIB, 3),
        "peak_rss_gib": round(peak / GIB, 3),
        "first_step_s": round(step_s[0], 3),
        "step_min_s": round(min(later), 3),
        "step_median_s": round(statistics.median(later), 3),
        "steps": len(step_s),
        "loss": round(float(loss), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=["large", "ml1m"], default="large")
    parser.add_argument("--n-items", type=int, default=None, help="default: 1,000,000 (large), 3416 (ml1m)")
    parser.add_argument("--loss", choices=["softmax", "sampled"], default=None)
    parser.add_argument("--negatives", type=int, default=1024)
    parser.add_argument("--sampling", choices=["uniform", "popularity"], default="popularity")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--steps", type=int, default=None, help="steps per run; default 3 (large), 8 (ml1m)")
    parser.add_argument("--optimizer", choices=["foreach", "fused"], default=None)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 leaves the default")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args)))
        return

    large = args.preset == "large"
    args.n_items = args.n_items or (1_000_000 if large else 3416)
    args.loss = args.loss or ("sampled" if large else "softmax")
    args.steps = args.steps or (3 if large else 8)
    # Variants: the large preset compares optimizer implementations (memory), ml1m compares precisions.
    optimizers = [args.optimizer] if args.optimizer else ["foreach", "fused"]
    precisions = [args.precision] if args.precision else ["fp32", "bf16"]
    if large:
        variants = [(opt, args.precision or "fp32") for opt in optimizers]
    else:
        variants = [(args.optimizer or "foreach", precision) for precision in precisions]

    results = []
    for optimizer, precision in variants:
        cmd = [sys.executable, __file__, "--worker", "--optimizer", optimizer, "--precision", precision]
        for name in ("n_items", "loss", "negatives", "sampling", "batch_size", "max_len", "steps", "threads"):
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        # Cross-check from the parent: the largest peak RSS of any child so far, as the kernel saw it.
        children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        result["children_maxrss_gib"] = round(children_kib * 1024 / GIB, 3)
        result["pass_rss"] = result["peak_rss_gib"] <= RSS_BAR_GIB
        if not large:
            result["pass_step"] = result["step_min_s"] <= ML1M_STEP_BAR_S
        results.append(result)
        print(
            f"{result['n_items']:>9} items {result['loss_fn']:>8} {result['optimizer']:>15} {precision:>5}: "
            f"peak RSS {result['peak_rss_gib']:.2f} GiB (bar {RSS_BAR_GIB}), step min "
            f"{result['step_min_s'] * 1000:.0f} ms / median {result['step_median_s'] * 1000:.0f} ms "
            f"(first {result['first_step_s'] * 1000:.0f} ms), {result['threads']} threads"
        )
    for result in results:
        print(json.dumps(result))
    if not all(r["pass_rss"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
