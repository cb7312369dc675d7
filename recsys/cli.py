"""``recsys``: one subcommand per job; each job's flags come from the signature of its ``run`` function.

Every subcommand takes ``--config FILE``, repeated ``--set dotted.key=value`` overrides and ``--json``
(print the result as one JSON object on stdout; human-readable text otherwise). Log lines and progress
go to stderr (:mod:`recsys.console`). Errors in the input (config, data, bundle, tracking URI), a full
disk, a training output directory in use by another run and a diverged training (deterministic for a
config: rerunning cannot help, changing it can) print one clear message on stderr and exit with status 2.

A verb maps to ``recsys.jobs.<job>.run`` (litgpt's ``__main__`` pattern). Each keyword parameter of
``run`` becomes a flag (``include_seen`` -> ``--include-seen``) with the parameter's type, its default
and the help text of its ``Args:`` entry, so no default is written twice: ``recommend --k`` left out is
``k=None``, which the job reads as ``inference.k`` from the config. The parameters ``cfg`` (the loaded
config), ``config_path`` (``--config``) and ``overrides`` (``--set``) come from the common flags.

The signatures are read from the job modules' source (:mod:`ast`) instead of importing the modules:
a job imports torch, Lightning and MLflow (seconds), and neither ``--help`` nor a config typo should wait
for that. ``tests/test_cli.py`` checks the flags against ``inspect.signature`` of the imported functions.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any, Protocol

import recsys
from recsys import console

__all__ = ["VERBS", "Flag", "JobSignature", "Verb", "build_parser", "job_signature", "main"]

JOBS_DIR = Path(__file__).resolve().parent / "jobs"
FROM_COMMON_FLAGS = ("cfg", "config_path", "overrides")
"""``run`` parameters filled from ``--config`` / ``--set`` rather than flags of their own."""


class _Result(Protocol):
    def to_json(self) -> dict[str, Any]: ...

    def summary(self) -> str: ...


@dataclass(frozen=True)
class Verb:
    """A subcommand: the job module whose ``run`` it calls, and parameters it fixes (no flag for them)."""

    job: str
    help: str
    fixed: Mapping[str, Any] = field(default_factory=dict)


VERBS: dict[str, Verb] = {
    "prepare": Verb("prepare", "Read, clean, encode and split an interaction log; print the data report."),
    "train": Verb("train", "Train BERT4Rec (prepares the data first if needed) and write a model bundle."),
    "demo": Verb(
        "train", "The bundled end-to-end demo: prepare + train + validation vs baseline.", {"resume": False}
    ),
    "evaluate": Verb(
        "evaluate", "Full-ranking metrics of a model bundle vs baselines on a prepared dataset."
    ),
    "recommend": Verb("recommend", "Batch top-k recommendations for all or listed users into parquet."),
    "similar-items": Verb(
        "similar_items", "Nearest items by embedding cosine, for 'more like this' shelves."
    ),
    "tune": Verb("tune", "Hyperparameter search with Optuna over a YAML search space."),
    "export": Verb("export", "Export a model bundle's scoring path (ONNX), checked against torch."),
}


# ------------------------------------------------------------------------------ signatures -> flags
@dataclass(frozen=True)
class Flag:
    """One keyword parameter of a job's ``run``, as a command-line option."""

    name: str
    type: type  # str, Path, int, float, or bool (a switch)
    default: Any
    required: bool
    choices: tuple[Any, ...] | None
    help: str

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class JobSignature:
    """``run(<positional from common flags>, *, <flags>, <keywords from common flags>)``."""

    positional: tuple[str, ...]
    flags: tuple[Flag, ...]
    keywords_from_common: tuple[str, ...]

    @property
    def config_required(self) -> bool:
        return "config_path" in self.positional


class SignatureError(TypeError):
    """A job's ``run`` has a parameter the CLI cannot turn into a flag."""


_SCALARS: dict[str, type] = {"str": str, "Path": Path, "int": int, "float": float, "bool": bool}


def _members(node: ast.expr, aliases: Mapping[str, ast.expr], where: str) -> list[Any]:
    """An annotation's members: scalar types, ``None`` and Literal choices (as a tuple)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _members(node.left, aliases, where) + _members(node.right, aliases, where)
    if isinstance(node, ast.Constant) and node.value is None:
        return [None]
    if isinstance(node, ast.Name) and node.id in _SCALARS:
        return [_SCALARS[node.id]]
    if isinstance(node, ast.Name) and node.id in aliases:
        return _members(aliases[node.id], aliases, where)
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("Literal", "typing.Literal"):
        choices = ast.literal_eval(node.slice)
        return [tuple(choices) if isinstance(choices, tuple) else (choices,)]
    raise SignatureError(f"{where}: cannot make a flag of type {ast.unparse(node)!r}")


def _arg_help(doc: str | None) -> dict[str, str]:
    """``name: text`` entries of a Google-style ``Args:`` section, continuation lines joined."""
    lines = (doc or "").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Args:"]
    helps: dict[str, str] = {}
    if not starts:
        return helps
    indent: int | None = None
    current = ""
    for line in lines[starts[0] + 1 :]:
        depth = len(line) - len(line.lstrip())
        if not line.strip() or (indent is not None and depth < indent):
            break
        entry = re.match(r"(\w+)(?: \([^)]*\))?: (.*)", line.strip())
        if entry and (indent is None or depth == indent):
            indent, current = depth, entry.group(1)
            helps[current] = entry.group(2)
        elif current:
            helps[current] += " " + line.strip()
    return {name: text.replace("``", "").replace("%", "%%") for name, text in helps.items()}


def _flag(
    arg: ast.arg, default: ast.expr | None, aliases: Mapping[str, ast.expr], helps: dict[str, str]
) -> Flag:
    where = f"run({arg.arg})"
    if arg.annotation is None:
        raise SignatureError(f"{where}: no annotation")
    members = _members(arg.annotation, aliases, where)
    choices = next((m for m in members if isinstance(m, tuple)), None)
    kinds = [m for m in members if isinstance(m, type)]
    kind = type(choices[0]) if choices else (kinds[0] if kinds else None)
    if kind is None:
        raise SignatureError(f"{where}: no usable type in {ast.unparse(arg.annotation)!r}")
    value = ast.literal_eval(default) if default is not None else None
    text = helps.get(arg.arg, "")
    if value is not None and value is not False:
        text += f" (default: {value})"
    return Flag(arg.arg, kind, value, default is None, choices, text.strip())


@cache
def job_signature(job: str) -> JobSignature:
    """The signature of ``recsys.jobs.<job>.run``, read from the module's source without importing it."""
    path = JOBS_DIR / f"{job}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            aliases[node.targets[0].id] = node.value
    runs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    if not runs:
        raise SignatureError(f"{path}: no top-level def run")
    args = runs[0].args
    positional = tuple(a.arg for a in (*args.posonlyargs, *args.args))
    if unknown := [name for name in positional if name not in FROM_COMMON_FLAGS]:
        raise SignatureError(f"{path}: positional parameter(s) {unknown} are not one of {FROM_COMMON_FLAGS}")
    helps = _arg_help(ast.get_docstring(runs[0]))
    flags: list[Flag] = []
    common: list[str] = []
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if arg.arg in FROM_COMMON_FLAGS:
            common.append(arg.arg)
        else:
            flags.append(_flag(arg, default, aliases, helps))
    return JobSignature(positional, tuple(flags), tuple(common))


def _add_flags(parser: argparse.ArgumentParser, flags: tuple[Flag, ...]) -> None:
    for flag in flags:
        if flag.type is bool:
            action: Any = argparse.BooleanOptionalAction if flag.default else "store_true"
            parser.add_argument(
                flag.option, dest=flag.name, action=action, default=bool(flag.default), help=flag.help
            )
            continue
        parser.add_argument(
            flag.option,
            dest=flag.name,
            type=flag.type,
            default=flag.default,
            required=flag.required,
            choices=flag.choices,
            help=flag.help,
        )


# ------------------------------------------------------------------------------------------ running
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


def _run_job(verb: Verb, args: argparse.Namespace) -> _Result:
    """Validate the config (before any heavy import, so that a typo fails in a fraction of a second), then
    import the job and call its ``run`` with the parsed flags."""
    signature = job_signature(verb.job)
    sets = [*console.stream_overrides(), *args.set]  # no progress bars unless stderr is a terminal
    common: dict[str, Any] = {"config_path": args.config, "overrides": sets}
    if signature.config_required:  # a tune file: validated the same way, read again by the job
        from recsys.tuning.tune_file import load_tune_config

        load_tune_config(args.config, sets)
    else:
        from recsys.config import load_config

        common["cfg"] = load_config(args.config, sets)
    job = importlib.import_module(f"recsys.jobs.{verb.job}")
    keywords = {f.name: getattr(args, f.name) for f in signature.flags if f.name not in verb.fixed}
    keywords.update(verb.fixed)
    keywords.update({name: common[name] for name in signature.keywords_from_common})
    result: _Result = job.run(*(common[name] for name in signature.positional), **keywords)
    return result


@dataclass
class ConfigShown:
    """``recsys config show``: the resolved configuration (file + ``--set``, defaults filled in)."""

    config: Any

    def to_json(self) -> dict[str, Any]:
        return dict(self.config.model_dump(mode="json"))

    def summary(self) -> str:
        from recsys.config import to_yaml

        return str(to_yaml(self.config)).rstrip()


def _config_show(args: argparse.Namespace) -> _Result:
    from recsys.config import load_config

    return ConfigShown(load_config(args.config, args.set))


# ------------------------------------------------------------------------------------------ parser
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
    for name, verb in VERBS.items():
        signature = job_signature(verb.job)
        p = sub.add_parser(name, help=verb.help, description=verb.help)
        _common(p, config_required=signature.config_required)
        _add_flags(p, tuple(f for f in signature.flags if f.name not in verb.fixed))
        p.set_defaults(handler=partial(_run_job, verb))
    config = sub.add_parser("config", help="Inspect configuration.", description="Inspect configuration.")
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    show_help = "Print the resolved config as YAML (defaults filled in, --set applied)."
    show = actions.add_parser("show", help=show_help, description=show_help)
    _common(show)
    show.set_defaults(handler=_config_show)
    return parser


def _report(args: argparse.Namespace, exc: BaseException) -> int:
    if args.debug:
        raise exc
    print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console.setup()
    from recsys.config import ConfigError

    try:
        # stdout holds the result only: whatever the job or a library prints goes to stderr.
        with console.result_stdout():
            result = args.handler(args)
    # ConfigError first: naming the other error types imports torch and MLflow, seconds a typo need not wait.
    except ConfigError as exc:
        return _report(args, exc)
    except _user_errors() as exc:
        return _report(args, exc)
    print(json.dumps(result.to_json(), default=str) if args.json else result.summary())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
