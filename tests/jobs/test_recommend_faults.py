"""``recsys recommend`` under faults (issue 12): a full disk, empty users and allow lists, and histories
errors located by file line. Each refusal: exit status 2, one line naming the right file, nothing written
and no staging directory left."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recsys.cli import main
from recsys.inference.writer import read_manifest
from tests.data.conftest import fill, small_tmpfs
from tests.inference.helpers import Setup, read_parts, untrained_setup

K = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return untrained_setup(tmp_path_factory.mktemp("recommend_faults"))


def recommend(setup: Setup, out: Path, *flags: str) -> int:
    model = ["--model", str(setup.bundle), "--k", str(K)]
    return main(["recommend", *model, "--out", str(out), *setup.overrides(), *flags])


def refused(setup: Setup, out: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    """Run recommend, check it failed cleanly (status 2, one line, nothing new beside --out)."""
    before = sorted(p.name for p in out.parent.iterdir())
    assert recommend(setup, out, *flags) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("recsys ")]
    assert len(lines) == 1, captured.err
    assert sorted(p.name for p in out.parent.iterdir()) == before  # no output, no .out.tmp-* left
    return lines[0]


def test_disk_full_is_one_error_and_the_previous_output_survives(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        out = disk / "recs"
        assert recommend(setup, out) == 0  # an earlier, complete output on that disk
        capsys.readouterr()
        before = read_parts(out)
        fill(disk, 4 * 1024)
        line = refused(setup, out, capsys, "--k", "20")
        assert line == (
            f"recsys recommend: error: no space left on device while writing {out}; expected free space "
            "and write permission on that file system (or another --out)"
        )
        assert read_parts(out).equals(before) and read_manifest(out)["k"] == K


@pytest.mark.parametrize("content", ["", "user_id\n", "\n\n"], ids=["empty", "header-only", "blank-lines"])
def test_empty_users_file_names_that_file(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    users = tmp_path / "users.txt"
    users.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    line = refused(setup, out, capsys, "--users", str(users))
    assert line == (
        f"recsys recommend: error: {users}: holds no user_id (the file is empty or has only a header); "
        "expected at least one user_id"
    )
    assert "--out" not in line and str(out) not in line


def test_every_listed_user_unknown_and_dropped_is_an_error(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = tmp_path / "users.csv"
    users.write_text("user_id\nnobody\nnoone\n", encoding="utf-8")
    line = refused(setup, tmp_path / "out", capsys, "--users", str(users), "--set", "data.unknown_ids=drop")
    assert f"{users}, column 'user_id': none of the listed users is in the prepared dataset" in line
    assert "(2 unknown, dropped by data.unknown_ids: drop)" in line


def test_empty_allow_list_is_an_error_an_empty_deny_list_denies_nothing(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "items.txt"
    empty.write_text("", encoding="utf-8")
    line = refused(setup, tmp_path / "out", capsys, "--allow", str(empty))
    assert line.startswith(f"recsys recommend: error: {empty}: holds no item_id")

    unknown = tmp_path / "unknown.csv"
    unknown.write_text("item_id\n777\n888\n", encoding="utf-8")
    line = refused(setup, tmp_path / "out", capsys, "--allow", str(unknown), "--set", "data.unknown_ids=drop")
    assert f"{unknown}, column 'item_id': none of the 2 allow-list item id(s) is known to the model" in line

    assert recommend(setup, tmp_path / "out", "--deny", str(empty)) == 0
    assert read_parts(tmp_path / "out").height == setup.dataset.n_users * K


def test_histories_errors_name_file_lines_like_prepare(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hist = tmp_path / "hist.csv"
    # Header = line 1; the blank line 3 still counts, so the unknown item 999 is on line 5.
    hist.write_text("user_id,item_id\nnew1,5\n\nnew1,3\nnew1,999\n", encoding="utf-8")
    line = refused(setup, tmp_path / "out", capsys, "--histories", str(hist))
    assert f"{hist}, line 5, column 'item_id': 1 item id(s) not known to the model, e.g. [999]" in line

    table = tmp_path / "hist.parquet"
    pl.DataFrame({"user_id": ["new1", "new1", "new2"], "item_id": [5, 999, 3]}).write_parquet(table)
    line = refused(setup, tmp_path / "out", capsys, "--histories", str(table))
    assert f"{table}, row 1, column 'item_id'" in line  # parquet has no lines: the 0-based row
