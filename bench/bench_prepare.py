"""Speed and memory of the data pipeline.

1. ML-1M (``../shared/data/ml-1m/ml-1m.txt``, 5-core like the papers): read + filter + encode + split
   in memory (bar: <= 1.0 s wall on 2 cores), plus the full ``prepare`` (write, report, plot). Best and
   median of ``--repeat`` runs in this process.
2. A synthetic log of ~20M interactions (140k users, 27k items), generated once with numpy and cached
   under ``bench/results/``: the full ``prepare`` in a fresh subprocess (bar: <= 30 s), whose peak
   resident memory is read with ``getrusage(RUSAGE_CHILDREN)`` (bar: <= 4 GiB).

Prints a table and one JSON line. Usage::

    .venv/bin/python bench/bench_prepare.py [--repeat 5] [--interactions 20000000] [--input-format parquet]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.config import CleaningConfig, DataConfig, SourceConfig  # noqa: E402
from recsys.data.pipeline import build, prepare  # noqa: E402
from recsys.data.synthetic import SyntheticSpec, write_log  # noqa: E402

ML1M = ROOT.parent / "shared" / "data" / "ml-1m" / "ml-1m.txt"
RESULTS = ROOT / "bench" / "results"
FIVE_CORE = CleaningConfig(min_user_interactions=5, min_item_interactions=5)
ML1M_BAR_S = 1.0
BIG_BAR_S = 30.0
BIG_BAR_GIB = 4.0


def bench_ml1m(repeat: int, workdir: Path) -> dict[str, Any]:
    """Core (build) and full prepare timings on ML-1M, in this process."""
    cfg = DataConfig(source=SourceConfig(path=ML1M), cleaning=FIVE_CORE, output_dir=workdir / "ml1m")
    core: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        built = build(cfg)
        core.append(time.perf_counter() - started)
    counts = (len(built.users), len(built.items), built.interactions.height)
    assert counts == (6_040, 3_416, 999_611), counts
    full: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        prepare(cfg, force=True)
        full.append(time.perf_counter() - started)
    return {
        "users": counts[0],
        "items": counts[1],
        "interactions": counts[2],
        "core_best_s": round(min(core), 3),
        "core_median_s": round(statistics.median(core), 3),
        "prepare_best_s": round(min(full), 3),
        "prepare_median_s": round(statistics.median(full), 3),
        "stages_s": built.timings,
    }


def synthetic_log(interactions: int, users: int, items: int, fmt: str) -> tuple[Path, float]:
    """The cached synthetic log (generated on first use) and how long generating it took."""
    spec = SyntheticSpec(n_users=users, n_items=items, n_interactions=interactions, seed=0)
    path = RESULTS / f"synthetic_{interactions}_{users}_{items}_seed0.{fmt}"
    if path.exists():
        return path, 0.0
    started = time.perf_counter()
    tmp = path.with_suffix(f".tmp.{fmt}")
    write_log(tmp, spec)
    tmp.rename(path)
    return path, time.perf_counter() - started


def child(source: str, output_dir: str) -> None:
    """Run one prepare (in the subprocess) and print its timings as JSON."""
    cfg = DataConfig(source=SourceConfig(path=Path(source)), cleaning=FIVE_CORE, output_dir=Path(output_dir))
    started = time.perf_counter()
    outcome = prepare(cfg, force=True)
    elapsed = time.perf_counter() - started
    print(
        json.dumps({"prepare_s": elapsed, "stages_s": outcome.timings, "counts": outcome.manifest["counts"]})
    )


def bench_big(path: Path, workdir: Path) -> dict[str, Any]:
    """Full prepare of the big log in a subprocess; wall time and peak RSS of that process."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(path), str(workdir / "big")],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    wall = time.perf_counter() - started
    # ru_maxrss is in KiB on Linux: the largest resident set of any child waited for (only this one).
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "input": path.name,
        "input_mib": round(path.stat().st_size / 2**20, 1),
        "rows": result["counts"]["input_rows"],
        "users": result["counts"]["users"],
        "items": result["counts"]["items"],
        "interactions": result["counts"]["interactions"],
        "prepare_s": round(result["prepare_s"], 2),
        "process_wall_s": round(wall, 2),
        "peak_rss_gib": round(peak_gib, 2),
        "stages_s": result["stages_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="ML-1M runs (best and median are reported).")
    parser.add_argument("--interactions", type=int, default=20_000_000)
    parser.add_argument("--users", type=int, default=140_000)
    parser.add_argument("--items", type=int, default=27_000)
    parser.add_argument("--input-format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--skip-big", action="store_true", help="Only the ML-1M part.")
    parser.add_argument("--child", nargs=2, metavar=("SOURCE", "OUTPUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench_prepare_", dir=RESULTS) as tmp:
        workdir = Path(tmp)
        ml1m = bench_ml1m(args.repeat, workdir)
        big: dict[str, Any] | None = None
        generated_s = 0.0
        if not args.skip_big:
            path, generated_s = synthetic_log(args.interactions, args.users, args.items, args.input_format)
            big = bench_big(path, workdir)
    rows = [
        ("ML-1M read+filter+encode+split, best", f"{ml1m['core_best_s']:.3f} s", f"<= {ML1M_BAR_S} s"),
        ("ML-1M read+filter+encode+split, median", f"{ml1m['core_median_s']:.3f} s", ""),
        ("ML-1M full prepare (+write/report/plot), median", f"{ml1m['prepare_median_s']:.3f} s", ""),
        (
            "ML-1M users / items / interactions",
            f"{ml1m['users']:,} / {ml1m['items']:,} / {ml1m['interactions']:,}",
            "",
        ),
    ]
    if big is not None:
        rows += [
            (
                f"synthetic {big['rows'] / 1e6:.0f}M rows ({args.input_format}) prepare",
                f"{big['prepare_s']:.2f} s",
                f"<= {BIG_BAR_S} s",
            ),
            ("synthetic peak RSS of that process", f"{big['peak_rss_gib']:.2f} GiB", f"<= {BIG_BAR_GIB} GiB"),
            (
                "synthetic users / items / interactions kept",
                f"{big['users']:,} / {big['items']:,} / {big['interactions']:,}",
                "",
            ),
        ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>30}  bar")
    for name, value, bar in rows:
        print(f"{name:<{width}}  {value:>30}  {bar}")
    summary = {
        "bench": "prepare",
        "cpus": os.cpu_count(),
        "ml1m": ml1m,
        "synthetic": big,
        "synthetic_generation_s": round(generated_s, 2),
        "pass": ml1m["core_best_s"] <= ML1M_BAR_S
        and (big is None or (big["prepare_s"] <= BIG_BAR_S and big["peak_rss_gib"] <= BIG_BAR_GIB)),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
