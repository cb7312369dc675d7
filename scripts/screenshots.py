"""Screenshots of the MLflow UI for the README: a training run's metric charts and overview, and a run
comparison when there are several runs.

``--fresh CONFIG`` trains CONFIG into a new, empty store (``recsys train``; ``--set`` overrides pass
through), so the pictures show what a first-time user sees after ``make demo``: MLflow's default chart
layout (nothing saved in the browser), sections in MLflow's order. The metric charts' shot is refused
unless the validation curves are in the first screenful (1400x900).

    python scripts/screenshots.py --fresh configs/demo.yaml --set train.max_epochs=20
    python scripts/screenshots.py --store sqlite:///mlruns.db --experiment recsys-demo
    python scripts/screenshots.py --tracking-uri http://127.0.0.1:5000 --run-id <id>

Starts ``mlflow server`` on loopback against a tracking store (or uses a running server) and drives
headless Chromium (``mlflow_browser``). Needs Debian's ``chromium`` package (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_browser import UI_PRESETS, Browser, CDPError, mlflow_server

ROOT = Path(__file__).resolve().parents[1]
FIRST_SCREEN_CHART = "best_ndcg_at_10"
"""The validation chart (``val/best_ndcg_at_10``) that must be in the first screenful of the metrics tab."""


# ------------------------------------------------------------------------------------------ pages
@dataclass(frozen=True)
class Shot:
    name: str
    url: str
    expect: list[str]
    in_first_screen: list[str] = field(default_factory=list)


def plan_shots(
    tracking_uri: str, base_url: str, experiment: str, run_id: str | None, compare: int
) -> list[Shot]:
    """Pick the run (given, else the latest finished training run) and the runs to compare."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no experiment named {experiment!r} at {tracking_uri}")
    finished = client.search_runs(
        [exp.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"]
    )
    if not finished:
        raise SystemExit(f"experiment {experiment!r} has no finished runs")
    if run_id is None:
        trains = [r for r in finished if r.data.tags.get("pipeline") == "train"]
        run_id = (trains or finished)[0].info.run_id
    run = client.get_run(run_id)
    pipeline = run.data.tags.get("pipeline")
    # Chart titles drop the section prefix: val/best_ndcg_at_10 is shown as "best_ndcg_at_10".
    charts = sorted(m.split("/", 1)[-1] for m in run.data.metrics if not m.startswith("system/"))
    chart = FIRST_SCREEN_CHART if FIRST_SCREEN_CHART in charts else (charts[0] if charts else "Metrics")
    e, r = exp.experiment_id, run_id
    run_url = f"{base_url}/#/experiments/{e}/runs/{r}"
    shots = [
        Shot(
            "mlflow_run_metrics",
            f"{run_url}/model-metrics",
            [run.info.run_name, chart],
            in_first_screen=[chart] if pipeline == "train" else [],
        ),
        Shot("mlflow_run", run_url, [run.info.run_name, "Description"]),
    ]
    parent = run.data.tags.get("mlflow.parentRunId")  # a study's trials compare with each other
    peers = [
        x
        for x in finished
        if (pipeline is None or x.data.tags.get("pipeline") == pipeline)
        and x.data.tags.get("mlflow.parentRunId") == parent
    ][:compare]
    if len(peers) >= 2:
        ids = urllib.parse.quote(json.dumps([x.info.run_id for x in peers]))
        shots.append(
            Shot(
                "mlflow_compare",
                f"{base_url}/#/compare-runs?runs={ids}&experiments={urllib.parse.quote(json.dumps([e]))}",
                [f"Comparing {len(peers)} Runs"],
            )
        )
    else:
        print(f"only {len(peers)} comparable finished run(s): no comparison screenshot", file=sys.stderr)
    return shots


def take(shots: list[Shot], out: Path, chromium: str, on_saved: Callable[[Path], None]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recsys-chromium-") as profile:
        browser = Browser(chromium, Path(profile))  # a new profile: no chart layout saved from before
        try:
            browser.open_page(UI_PRESETS)
            for shot in shots:
                browser.goto(shot.url, shot.expect, settle=4.0)
                hidden = [t for t in shot.in_first_screen if not browser.in_first_screenful(t)]
                if hidden:
                    raise CDPError(f"{shot.url}: {hidden} not in the first screenful")
                path = out / f"{shot.name}.png"
                browser.screenshot(path)
                on_saved(path)
        finally:
            browser.close()


# ------------------------------------------------------------------------------------------ a fresh store
@contextmanager
def fresh_store(config: Path, sets: list[str]) -> Iterator[tuple[str, str]]:
    """Train ``config`` into a new SQLite store in a temporary folder; yields (store URI, experiment)."""
    from recsys.config import load_config

    experiment = load_config(config, sets).tracking.experiment
    with tempfile.TemporaryDirectory(prefix="recsys-screenshots-") as tmp:
        store = f"sqlite:///{Path(tmp) / 'mlruns.db'}"
        isolated = [
            f"tracking.tracking_uri={store}",
            f"train.output_dir={Path(tmp) / 'run'}",
            f"data.output_dir={Path(tmp) / 'prepared'}",
        ]
        cmd = [sys.executable, "-m", "recsys", "train", "--config", str(config.resolve())]
        for item in [*isolated, *sets]:
            cmd += ["--set", item]
        print("training:", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, cwd=ROOT, check=True)
        yield store, experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--fresh", type=Path, help="train this config into a new store, then shoot it")
    where.add_argument(
        "--store", default="sqlite:///mlruns.db", help="backend store to serve (default %(default)s)"
    )
    where.add_argument("--tracking-uri", help="use this running MLflow server instead of starting one")
    parser.add_argument("--set", action="append", default=[], help="with --fresh: a config override")
    parser.add_argument("--experiment", default="recsys", help="experiment to show (default %(default)s)")
    parser.add_argument("--run-id", help="run for the run pages (default: latest finished train run)")
    parser.add_argument("--compare", type=int, default=4, help="runs on the comparison page (default 4)")
    parser.add_argument(
        "--out", type=Path, default=Path("docs/img"), help="output folder (default %(default)s)"
    )
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)

    if not Path(args.chromium).exists():
        parser.error(f"chromium not found at {args.chromium} (Debian: apt-get install -y chromium)")

    def shoot(tracking_uri: str, base: str, experiment: str) -> None:
        shots = plan_shots(tracking_uri, base, experiment, args.run_id, args.compare)
        take(shots, args.out, args.chromium, lambda path: print(path))

    if args.tracking_uri:
        base = args.tracking_uri.rstrip("/")
        shoot(base, base, args.experiment)
        return 0
    if args.fresh:
        with fresh_store(args.fresh, args.set) as (store, experiment), mlflow_server(store) as base:
            shoot(base, base, experiment)
        return 0
    store = args.store
    if store.startswith("sqlite:///") and not store.startswith("sqlite:////"):
        store = f"sqlite:///{Path(store[len('sqlite:///') :]).resolve()}"  # the server runs elsewhere
    with mlflow_server(store) as base:
        shoot(base, base, args.experiment)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
