"""``recsys``: one subcommand per pipeline. Parses arguments and calls a typed ``run`` function.

Every subcommand takes ``--config FILE``, repeated ``--set dotted.key=value`` overrides and ``--json``
(print the result as one JSON object on stdout; human-readable text otherwise). Errors in the input
(config, data, bundle, tracking URI), a full disk, a training output directory in use by another run and
a diverged training (deterministic for a config: rerunning cannot help, changing it can) print one clear
message on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import recsys

__all__ = ["main"]


class _Result(Protocol):
    def to_json(self) -> dict[str, Any]: ...

    def summary(self) -> str: ...


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'bad input', shown without a traceback (evaluated only once one is raised)."""
    from recsys.config import ConfigError
    from recsys.data.errors import DataError
    from recsys.inference.export import ExportError
    from recsys.training.bundle import BundleError
    from recsys.training.divergence import TrainingDivergedError
    from recsys.training.lock import OutputDirBusyError

    errors: list[type[BaseException]] = [
        ConfigError,
        DataError,
        BundleError,
        ExportError,
        FileNotFoundError,
        OutputDirBusyError,
        TrainingDivergedError,
    ]
    try:
        from recsys.tracking.store import TrackingError

        errors.append(TrackingError)
    except ImportError:  # pragma: no cover - tracking is optional at import time
        pass
    return tuple(errors)


def _load(args: argparse.Namespace) -> Any:
    """The validated config (or, for ``tune``, the validated tune file): before any heavy import, so that
    a typo in a key fails in a fraction of a second."""
    if args.command == "tune":
        from recsys.tuning.tune_file import load_tune_config

        return load_tune_config(args.config, args.set)
    from recsys.config import load_config

    return load_config(args.config, args.set)


def _cmd_prepare(args: argparse.Namespace, cfg: Any) -> _Result:
    from recsys.jobs import prepare

    return prepare.run(cfg)


def _cmd_train(args: argparse.Namespace, cfg: Any) -> _Result:
    from recsys.jobs import train

    return train.run(cfg, resume=args.resume)


def _cmd_demo(args: argparse.Namespace, cfg: Any) -> _Result:
    from recsys.jobs import train

    return train.run(cfg, resume=False)


def _cmd_evaluate(args: argparse.Namespace, cfg: Any) -> _Result:
    from recsys.jobs import evaluate

    return evaluate.run(cfg, model=args.model, data=args.data, split=args.split, out=args.out)


def _cmd_recommend(args: argparse.Namespace, cfg: Any) -> _Result:
    from recsys.jobs import recommend

    return recommend.run(
        cfg,
        model=args.model,
        users=args.users,
        k=args.k,
        out=args.out,
        histories=args.histories,
        allow=args.allow,
        deny=args.deny,
        include_seen=args.include_seen,
    )


def _cmd_similar(args: argparse.Namespace, cfg: Any) -> _Result:
    from recsys.jobs import similar_items

    return similar_items.run(cfg, model=args.model, k=args.k, out=args.out)


def _cmd_export(args: argparse.Namespace, cfg: Any) -> _Result:
    from recsys.jobs import export

    return export.run(cfg, model=args.model, out=args.out, format=args.format)


def _cmd_tune(args: argparse.Namespace, cfg: Any) -> _Result:
    from recsys.jobs import tune

    return tune.run(args.config, overrides=args.set, n_trials=args.n_trials, timeout=args.timeout)


@dataclass
class ConfigShown:
    """``recsys config show``: the resolved configuration (file + ``--set``, defaults filled in)."""

    config: Any

    def to_json(self) -> dict[str, Any]:
        return dict(self.config.model_dump(mode="json"))

    def summary(self) -> str:
        from recsys.config import to_yaml

        return str(to_yaml(self.config)).rstrip()


def _cmd_config_show(args: argparse.Namespace, cfg: Any) -> _Result:
    return ConfigShown(cfg)


def _common(p: argparse.ArgumentParser, *, config_required: bool = False) -> None:
    p.add_argument("--config", type=Path, required=config_required, help="YAML config file (configs/*.yaml).")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a config value by dotted key, e.g. --set train.max_epochs=3 (repeatable).",
    )
    p.add_argument("--json", action="store_true", help="Print the result as one JSON object on stdout.")
    p.add_argument("--debug", action="store_true", help="Show tracebacks for input errors.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"recsys {recsys.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, tuple[str, Callable[[argparse.Namespace, Any], _Result]]] = {
        "prepare": ("Read, clean, encode and split an interaction log; print the data report.", _cmd_prepare),
        "train": ("Train BERT4Rec (prepares the data first if needed) and write a model bundle.", _cmd_train),
        "demo": ("The bundled end-to-end demo: prepare + train + validation vs baseline.", _cmd_demo),
        "evaluate": (
            "Full-ranking metrics of a model bundle vs baselines on a prepared dataset.",
            _cmd_evaluate,
        ),
        "recommend": ("Batch top-k recommendations for all or listed users into parquet.", _cmd_recommend),
        "similar-items": ("Nearest items by embedding cosine, for 'more like this' shelves.", _cmd_similar),
        "tune": ("Hyperparameter search with Optuna over a YAML search space.", _cmd_tune),
        "export": ("Export a model bundle's scoring path (ONNX), checked against torch.", _cmd_export),
    }
    for name, (help_text, handler) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, config_required=name == "tune")
        p.set_defaults(handler=handler)
        if name == "train":
            p.add_argument("--resume", action="store_true", help="Continue from the last checkpoint.")
        if name == "evaluate":
            p.add_argument("--model", required=True, help="Model bundle directory or models:/name/version.")
            p.add_argument("--data", required=True, type=Path, help="Prepared dataset directory.")
            p.add_argument("--split", choices=["test", "validation"], default="test")
            p.add_argument(
                "--out",
                type=Path,
                help="Artifacts directory (default: <train.output_dir>/evaluation/<split>).",
            )
        if name in ("recommend", "similar-items"):
            p.add_argument("--model", required=True, help="Model bundle directory or models:/name/version.")
            p.add_argument("--k", type=int, default=10, help="Items per user.")
            p.add_argument("--out", required=True, type=Path, help="Output directory (parquet parts).")
        if name == "recommend":
            p.add_argument(
                "--users", default="all", help="'all' or a file of user ids (one per line/parquet)."
            )
            p.add_argument(
                "--histories",
                type=Path,
                help="Parquet/CSV of (user_id, item_id[, timestamp]) "
                "histories for users not seen in training.",
            )
            p.add_argument("--allow", type=Path, help="File of item ids that may be recommended.")
            p.add_argument("--deny", type=Path, help="File of item ids that must not be recommended.")
            p.add_argument("--include-seen", action="store_true", help="Allow already-seen items.")
        if name == "export":
            p.add_argument("--model", required=True, help="Model bundle directory or models:/name/version.")
            p.add_argument("--out", required=True, type=Path, help="File to write (model.onnx).")
            p.add_argument("--format", choices=["onnx"], default="onnx", help="Export format.")
        if name == "tune":
            p.add_argument("--n-trials", type=int, help="Number of trials (overrides the config).")
            p.add_argument("--timeout", type=float, help="Stop the study after this many seconds.")
    config = sub.add_parser("config", help="Inspect configuration.", description="Inspect configuration.")
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    show_help = "Print the resolved config as YAML (defaults filled in, --set applied)."
    show = actions.add_parser("show", help=show_help, description=show_help)
    _common(show)
    show.set_defaults(handler=_cmd_config_show)
    return parser


def _report(args: argparse.Namespace, exc: BaseException) -> int:
    if args.debug:
        raise exc
    print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Progress lines (one per epoch, per part written) go to stderr so that --json stdout stays clean.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("alembic", "mlflow", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from recsys.config import ConfigError

    try:
        result = args.handler(args, _load(args))
    # ConfigError first: naming the other error types imports torch and MLflow, seconds a typo need not wait.
    except ConfigError as exc:
        return _report(args, exc)
    except _user_errors() as exc:
        return _report(args, exc)
    if args.json:
        print(json.dumps(result.to_json(), default=str))
    else:
        print(result.summary())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
