"""The CLI: flags derived from the jobs' signatures, --json stdout, --version, python -m recsys, config show,
and config errors before any heavy import."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import recsys
from recsys.cli import FROM_COMMON_FLAGS, VERBS, _arg_help, build_parser, job_signature, main
from recsys.config import load_config, to_yaml
from tests.training.helpers import planted_rule_log, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"recsys {recsys.__version__}"


def test_config_show_prints_the_resolved_config_with_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    sets = ["--set", "train.optimizer.lr=0.005", "--set", "runtime.threads=3"]
    assert main(["config", "show", "--config", str(ROOT / "configs" / "demo.yaml"), *sets]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["optimizer"]["lr"] == 0.005 and shown["runtime"]["threads"] == 3
    assert shown["train"]["schedule"]["kind"] == "cosine"  # from the file
    assert shown["eval"]["ks"] == [1, 5, 10, 20]  # defaults filled in
    # It is a complete config: loading it gives the same object.
    expected = load_config(ROOT / "configs" / "demo.yaml", ["train.optimizer.lr=0.005", "runtime.threads=3"])
    assert load_config(None, [f"{k}={json.dumps(v)}" for k, v in _flat(shown).items()]) == expected


def _flat(node: dict[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_a_config_typo_fails_with_status_2_before_torch_or_mlflow_is_imported() -> None:
    probe = (
        "import sys\n"
        "from recsys.cli import main\n"
        "rc = main(['train', '--set', 'train.lr=0.1'])\n"
        "heavy = sorted(m for m in ('torch', 'pytorch_lightning', 'mlflow', 'optuna') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "did you mean train.optimizer.lr?" in done.stderr
    assert "HEAVY []" in done.stdout


def test_python_dash_m_recsys_is_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "recsys", "config", "show", "--json", "--set", "model.n_layers=3"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"]["n_layers"] == 3


# ------------------------------------------------------------------------------- flags from signatures
@pytest.mark.parametrize("verb", sorted(VERBS))
def test_flags_are_the_keyword_parameters_of_the_jobs_run(verb: str) -> None:
    """What the CLI reads from the source is what Python sees in the imported function."""
    spec = VERBS[verb]
    run = importlib.import_module(f"recsys.jobs.{spec.job}").run
    params = {n: p for n, p in inspect.signature(run).parameters.items() if n not in FROM_COMMON_FLAGS}
    flags = {f.name: f for f in job_signature(spec.job).flags}
    assert flags.keys() == params.keys()
    for name, flag in flags.items():
        param = params[name]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY
        assert flag.required == (param.default is inspect.Parameter.empty), name
        if not flag.required:
            assert flag.default == param.default, name
        assert flag.help, f"{spec.job}.run: parameter {name!r} has no Args: entry"
    # Parsing only the required flags gives run() its own defaults (the fixed ones are not flags at all).
    required = [a for f in flags.values() if f.required for a in (f.option, "x")]
    if job_signature(spec.job).config_required:
        required += ["--config", "tune.yaml"]
    parsed = vars(build_parser().parse_args([verb, *required]))
    for name, flag in flags.items():
        if name in spec.fixed:
            assert name not in parsed
        elif not flag.required:
            assert parsed[name] == params[name].default, name


def test_recommend_k_left_out_is_none_so_the_job_reads_inference_k() -> None:
    args = build_parser().parse_args(["recommend", "--model", "m", "--out", "o"])
    assert args.k is None and args.users == "all" and args.include_seen is False
    assert build_parser().parse_args(["similar-items", "--model", "m", "--out", "o"]).k is None
    assert build_parser().parse_args(["recommend", "--model", "m", "--out", "o", "--k", "7"]).k == 7


def test_literal_parameters_are_choices(capsys: pytest.CaptureFixture[str]) -> None:
    (split,) = [f for f in job_signature("evaluate").flags if f.name == "split"]
    assert split.choices == ("test", "validation") and split.default == "test"
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["evaluate", "--model", "m", "--data", "d", "--split", "train"])
    assert done.value.code == 2
    assert "invalid choice: 'train'" in capsys.readouterr().err


def test_args_section_entries_and_continuation_lines() -> None:
    doc = """Do it.

    Args:
        cfg: the config.
        out: where it goes; default ``<train.output_dir>/x``
            (replaced atomically), 100% of it.
        k (int): items.

    Returns:
        nothing: not an argument.
    """
    assert _arg_help(doc) == {
        "cfg": "the config.",
        "out": "where it goes; default <train.output_dir>/x (replaced atomically), 100%% of it.",
        "k": "items.",
    }


def test_json_stdout_is_one_object_even_while_lightning_draws_its_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user's own --set runtime.progress_bar=true wins over the non-terminal default: Lightning then draws
    its bar on sys.stdout, which the CLI points at stderr while the job runs."""
    source = planted_rule_log(tmp_path / "log.csv", n_users=30, n_items=12, length=8)
    config = tmp_path / "config.yaml"
    config.write_text(to_yaml(tiny_config(tmp_path, source, **{"train.max_epochs": 2})), encoding="utf-8")
    assert main(["train", "--config", str(config), "--set", "runtime.progress_bar=true", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["epochs"] == 2 and 1 <= result["best_epoch"] <= 2
    assert "Epoch 2/2: 100%" in err  # Lightning's bar, epochs counted from 1 as in the log, on stderr
