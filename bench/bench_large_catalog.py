"""Peak memory and time of one BERT4Rec training step over a 1,000,000-item catalogue.

Forward + sampled softmax (1024 shared negatives, logQ) + backward + AdamW step, at hidden 64, 2 blocks,
max_len 200, batch 128, mask probability 0.2. Each configuration runs in a fresh subprocess and reports
its own peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``): tracemalloc does not see torch's
allocations, RSS does. Bar: peak RSS <= 4 GiB.

    .venv/bin/python bench/bench_large_catalog.py            # both optimizer variants
    .venv/bin/python bench/bench_large_catalog.py --steps 3 --optimizer fused

Prints a table line per variant and one JSON line per variant (``{"bench": "large_catalog", ...}``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GIB = 1024**3
BAR_GIB = 4.0


def _rss_bytes() -> int:
    """Peak RSS of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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
    from recsys.config import MaskingConfig, ModelConfig, SampledSoftmaxLoss
    from recsys.model import BERT4Rec, build_loss, mask_items

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rss_import = _current_rss_bytes()

    n_items = args.n_items
    model = BERT4Rec(n_items, ModelConfig(hidden_size=64, n_layers=2, n_heads=2, max_len=args.max_len))
    model.train()
    # Zipf-like popularity so that popularity sampling and logQ are exercised as in real catalogues.
    counts = torch.zeros(n_items + 2, dtype=torch.long)
    counts[1 : n_items + 1] = (1e6 / torch.arange(1, n_items + 1, dtype=torch.float64)).long() + 1
    loss_cfg = SampledSoftmaxLoss(n_negatives=args.negatives, sampling=args.sampling, logq_correction=True)
    loss_fn = build_loss(loss_cfg, n_items, counts)
    fused = args.optimizer == "fused"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused, foreach=None if fused else True)
    rss_model = _current_rss_bytes()

    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, n_items + 1, (args.batch_size, args.max_len), generator=g)
    masking = MaskingConfig(mask_prob=0.2)
    step_s: list[float] = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        inputs, labels = mask_items(items, n_items=n_items, cfg=masking, generator=g)
        positions = labels > 0
        hidden = model.hidden_at(inputs, positions)  # [M, d]
        loss = loss_fn(hidden, labels[positions], model, g)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - t0)
    peak = _rss_bytes()
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "bench": "large_catalog",
        "n_items": n_items,
        "params": n_params,
        "optimizer": f"AdamW({args.optimizer})",
        "negatives": args.negatives,
        "sampling": args.sampling,
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        "masked_positions": int(positions.sum()),
        "threads": torch.get_num_threads(),
        "rss_after_import_gib": round(rss_import / GIB, 3),
        "rss_after_model_gib": round(rss_model / GIB, 3),
        "peak_rss_gib": round(peak / GIB, 3),
        "bar_gib": BAR_GIB,
        "pass": peak <= BAR_GIB * GIB,
        "first_step_s": round(step_s[0], 3),
        "later_step_s": round(min(step_s[1:]), 3) if len(step_s) > 1 else None,
        "loss": round(float(loss), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-items", type=int, default=1_000_000)
    parser.add_argument("--negatives", type=int, default=1024)
    parser.add_argument("--sampling", choices=["uniform", "popularity"], default="popularity")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument(
        "--steps", type=int, default=3, help="steps per run (the first allocates the AdamW state)"
    )
    parser.add_argument("--optimizer", choices=["foreach", "fused", "both"], default="both")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 leaves the default")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args)))
        return

    variants = ["foreach", "fused"] if args.optimizer == "both" else [args.optimizer]
    results = []
    for variant in variants:
        cmd = [sys.executable, __file__, "--worker", "--optimizer", variant]
        for name in ("n_items", "negatives", "sampling", "batch_size", "max_len", "steps", "threads"):
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        # Cross-check from the parent: the child's peak RSS as the kernel accounted it.
        children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        result["children_maxrss_gib"] = round(children_kib * 1024 / GIB, 3)
        results.append(result)
        print(
            f"{result['optimizer']:>16}: peak RSS {result['peak_rss_gib']:.2f} GiB "
            f"(model+optimizer built {result['rss_after_model_gib']:.2f} GiB) "
            f"first step {result['first_step_s']:.2f} s, later {result['later_step_s']} s, "
            f"bar {BAR_GIB} GiB: {'PASS' if result['pass'] else 'FAIL'}"
        )
    for result in results:
        print(json.dumps(result))
    if not all(r["pass"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
