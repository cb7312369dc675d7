"""Batch top-k recommendation: ML-1M wall time, and peak memory at 1,000,000 users x 100,000 items.

Bar 1 (``ml1m``): top-10 for all 6,040 ML-1M users, seen items excluded, with a model of the ML-1M shape
(hidden 64, 2 blocks, max_len 200, 3,416 items; untrained weights time the same as trained ones), through
``recsys.jobs.recommend.run`` end to end: bundle load, prepared-dataset load, scoring, parquet parts,
manifest, atomic publish. Bar: <= 2 s (RecTools: 13.2 s). The prepared ML-1M comes from
``../shared/data/ml-1m/ml-1m.txt`` (``sasrec_txt``, at least 5 interactions per user and item).

``cold``: a fresh ``python -X importtime -m recsys recommend`` process on the same data (tracking off):
wall time and the share of it spent importing (bar: under half).

Bar 2 (``large``): 1,000,000 synthetic users with 20-50 items each over a 100,000-item catalogue, an
untrained model of the same shape, scored by ``recsys.inference.batch.write_recommendations`` (the path
``run`` uses) into parquet parts. Runs in a fresh subprocess that reports its own peak RSS
(``resource.getrusage``). Bar: peak RSS <= 4 GiB; prints users/s.

    .venv/bin/python bench/bench_recommend.py                  # both bars
    .venv/bin/python bench/bench_recommend.py ml1m --repeat 5 [--bundle runs/ml-1m/model] [--threads 2]
    .venv/bin/python bench/bench_recommend.py cold --repeat 3
    .venv/bin/python bench/bench_recommend.py large --users 100000   # a quicker, smaller run

Prints a line per measurement and one JSON line per bar (``{"bench": "recommend_ml1m", ...}``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import cpu_model

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3
ML1M_BAR_S = 2.0
LARGE_BAR_GIB = 4.0
ML1M_SHAPE = {
    "model.hidden_size": 64,
    "model.n_layers": 2,
    "model.n_heads": 2,
    "model.max_len": 200,
    "model.dropout": 0.1,  # what dropout: auto gives ML-1M; the untrained model is built without fit()
    "model.attention_dropout": 0.1,
}


def _peak_rss() -> int:
    """Peak RSS of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _ml1m_sets(work: Path, data: Path, batch_size: int, threads: int) -> list[str]:
    """The ``--set`` overrides of the ML-1M bar (also passed to the CLI by the cold bar)."""
    sets = {
        "data.source.path": str(data),
        "data.source.format": "sasrec_txt",
        "data.cleaning.min_user_interactions": 5,
        "data.cleaning.min_item_interactions": 5,
        "data.output_dir": str(work / "ml-1m"),
        "train.output_dir": str(work / "run"),
        "runtime.accelerator": "cpu",
        "runtime.progress_bar": False,
        "tracking.enabled": False,
        "inference.batch_size": batch_size,
        **({"runtime.threads": threads} if threads else {}),
        **ML1M_SHAPE,
    }
    return [f"{k}={v}" for k, v in sets.items()]


def _ml1m_inputs(work: Path, args: argparse.Namespace) -> tuple[Any, Path, int]:
    """(config, bundle, n_items): the prepared ML-1M under ``work`` and a bundle for it (``--bundle``, or
    an untrained model of the ML-1M shape)."""
    import torch

    from recsys.config import load_config
    from recsys.data.fingerprint import dataset_fingerprint
    from recsys.data.pipeline import prepare
    from recsys.data.prepared import PreparedDataset
    from recsys.model.bert4rec import BERT4Rec
    from recsys.training.bundle import save_bundle

    cfg = load_config(None, _ml1m_sets(work, args.data, args.batch_size, args.threads))
    dataset = PreparedDataset.load(prepare(cfg.data, plot=False).path)
    if args.bundle is not None:  # a trained bundle (its items must be this dataset's)
        return cfg, args.bundle, dataset.n_items
    torch.manual_seed(0)
    model = BERT4Rec(dataset.n_items, cfg.model).eval()
    bundle = save_bundle(
        work / "run" / "model",
        model,
        cfg,
        dataset.users,
        dataset.items,
        dataset.item_counts(),
        data_fingerprint=dataset_fingerprint(dataset),
    )
    return cfg, bundle, dataset.n_items


def bench_ml1m(args: argparse.Namespace) -> dict[str, Any]:
    """Bar 1, in this process; imports are not timed (they are paid once per process: see ``cold``)."""
    sys.path.insert(0, str(ROOT))
    import torch

    from recsys.jobs import recommend

    with tempfile.TemporaryDirectory(prefix="bench-recommend-") as tmp:
        work = Path(tmp)
        cfg, bundle, n_items = _ml1m_inputs(work, args)
        walls: list[float] = []
        cpus: list[float] = []
        results = []
        for i in range(args.repeat + 1):  # the first run warms caches and lazy imports; not counted
            t0, c0 = time.perf_counter(), time.process_time()
            result = recommend.run(cfg, model=bundle, users="all", k=10, out=work / "recs")
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if i > 0:
                walls.append(wall)
                cpus.append(cpu)
                results.append(result)
            print(
                f"ml1m run {i}{' (warm-up)' if i == 0 else ''}: {wall:.3f} s wall end to end "
                f"({cpu:.3f} s CPU), {result.seconds:.3f} s scoring+writing, "
                f"{result.users_per_second:,.0f} users/s, {result.rows:,} rows"
            )
        best = min(walls)
        summary = {
            "bench": "recommend_ml1m",
            "users": results[-1].users,
            "items": n_items,
            "k": 10,
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "cpu": cpu_model(),
            "wall_s_min": round(best, 3),
            "wall_s_median": round(statistics.median(walls), 3),
            "cpu_s_min": round(min(cpus), 3),
            "cpu_s_median": round(statistics.median(cpus), 3),
            "users_per_s": round(results[-1].users / best, 1),
            "bar_s": ML1M_BAR_S,
            "pass": best <= ML1M_BAR_S,
        }
    print(f"ml1m: best {best:.3f} s, median {summary['wall_s_median']:.3f} s (bar {ML1M_BAR_S} s)")
    return summary


def _import_seconds(importtime: str) -> float:
    """Seconds spent importing, from ``python -X importtime`` output: the top-level imports' totals."""
    total = 0
    for line in importtime.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|", 2)
            if cumulative.strip().isdigit() and not name.startswith("  "):  # depth 0: one leading space
                total += int(cumulative.strip())
    return total / 1e6


def bench_cold(args: argparse.Namespace) -> dict[str, Any]:
    """A cold ``recsys recommend`` process (``python -X importtime -m recsys recommend``), tracking off:
    its wall time and the share spent importing."""
    sys.path.insert(0, str(ROOT))
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-recommend-cold-") as tmp:
        work = Path(tmp)
        _, bundle, _ = _ml1m_inputs(work, args)
        sets = [a for s in _ml1m_sets(work, args.data, args.batch_size, args.threads) for a in ("--set", s)]
        cmd = [sys.executable, "-X", "importtime", "-m", "recsys", "recommend", *sets]
        cmd += ["--model", str(bundle), "--out", str(work / "recs"), "--k", "10", "--json"]
        for i in range(args.repeat + 1):  # the first run warms the page cache; not counted
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
            wall = time.perf_counter() - t0
            if done.returncode != 0:
                raise SystemExit(f"recsys recommend failed ({done.returncode}):\n{done.stderr[-3000:]}")
            job = json.loads(done.stdout.strip().splitlines()[-1])
            imports = _import_seconds(done.stderr)
            print(
                f"cold run {i}{' (warm-up)' if i == 0 else ''}: {wall:.2f} s wall, {imports:.2f} s importing "
                f"({imports / wall:.0%}), job {job['total_seconds']:.2f} s"
            )
            if i > 0:
                runs.append((wall, imports, job["total_seconds"]))
    wall, imports, job_s = min(runs)
    return {
        "bench": "recommend_cold",
        "wall_s": round(wall, 3),
        "import_s": round(imports, 3),
        "import_share": round(imports / wall, 3),
        "job_s": round(job_s, 3),
        "pass": imports / wall < 0.5,
    }


def large_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Bar 2, measured inside this (fresh) process."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import polars as pl
    import torch

    from recsys.config import load_config
    from recsys.data.sequences import Sequences
    from recsys.data.vocab import Vocabulary
    from recsys.inference.batch import write_recommendations
    from recsys.inference.recommender import Recommender
    from recsys.model.bert4rec import BERT4Rec

    rss_import = _peak_rss()
    rng = np.random.default_rng(0)
    n_users, n_items = args.users, args.items
    lengths = rng.integers(20, 51, n_users)
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # Zipf-like item popularity, so that histories look like real logs.
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=int(offsets[-1]), p=weights / weights.sum()).astype(np.int32) + 1
    histories = Sequences(np.arange(n_users, dtype=np.int64), offsets, items)
    user_ids = pl.Series("user_id", np.arange(n_users, dtype=np.int64) + 1_000_000)
    item_ids = pl.Series("item_id", np.arange(n_items, dtype=np.int64) + 5_000_000)
    cfg = load_config(
        None,
        [
            *(f"{k}={v}" for k, v in ML1M_SHAPE.items()),
            "runtime.accelerator=cpu",
            "runtime.progress_bar=false",
            f"inference.batch_size={args.batch_size}",
        ],
    )
    torch.manual_seed(0)
    model = BERT4Rec(n_items, cfg.model).eval()
    rss_data = _peak_rss()
    with tempfile.TemporaryDirectory(prefix="bench-recommend-large-") as tmp:
        t0 = time.perf_counter()
        users = Vocabulary(user_ids)
        recommender = Recommender(model, users, Vocabulary(item_ids, offset=1), batch_size=args.batch_size)
        manifest = write_recommendations(
            recommender, histories, user_ids, Path(tmp) / "recs", cfg=cfg, k=10, exclude_seen=True
        )
        seconds = time.perf_counter() - t0
    peak = _peak_rss()
    return {
        "bench": "recommend_large",
        "users": n_users,
        "items": n_items,
        "interactions": int(offsets[-1]),
        "k": 10,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "rows": manifest["rows"],
        "parts": len(manifest["parts"]),
        "seconds": round(seconds, 1),
        "users_per_s": round(n_users / seconds, 1),
        "rss_after_import_gib": round(rss_import / GIB, 3),
        "rss_after_data_gib": round(rss_data / GIB, 3),
        "peak_rss_gib": round(peak / GIB, 3),
        "bar_gib": LARGE_BAR_GIB,
        "pass": peak / GIB <= LARGE_BAR_GIB,
    }


def bench_large(args: argparse.Namespace) -> dict[str, Any]:
    """Bar 2 in a subprocess, so that its peak RSS is its own."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "large-worker",
        "--users",
        str(args.users),
        "--items",
        str(args.items),
        "--batch-size",
        str(args.batch_size),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"large worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"large: {result['users']:,} users x {result['items']:,} items, {result['rows']:,} rows in "
        f"{result['parts']} parts, {result['seconds']:.1f} s, {result['users_per_s']:,.0f} users/s, "
        f"peak RSS {result['peak_rss_gib']:.2f} GiB (bar {LARGE_BAR_GIB} GiB)"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "bar", nargs="?", default="all", choices=["all", "ml1m", "cold", "large", "large-worker"]
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-1m" / "ml-1m.txt")
    parser.add_argument("--repeat", type=int, default=3, help="Timed ML-1M runs (after one warm-up).")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1024, help="inference.batch_size")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for ml1m (0: torch's default)")
    parser.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="A trained ML-1M bundle for ml1m (default: an untrained one).",
    )
    args = parser.parse_args()
    if args.bar == "large-worker":
        print(json.dumps(large_worker(args)))
        return
    if args.bar in ("all", "ml1m"):
        print(json.dumps(bench_ml1m(args)))
    if args.bar in ("all", "cold"):
        print(json.dumps(bench_cold(args)))
    if args.bar in ("all", "large"):
        print(json.dumps(bench_large(args)))


if __name__ == "__main__":
    main()
