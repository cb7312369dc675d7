"""ONNX export (``recsys export --format onnx``): ONNX Runtime's scores equal torch's on real histories,
for any batch size; the file says what it holds; a missing optional dependency is a clear error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.cli import main
from recsys.inference.export import INPUT_NAME, ExportError, export_onnx, pad_left
from recsys.training.bundle import load_bundle, save_bundle
from tests.inference.helpers import Setup, untrained_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    # An untied output embedding with a non-zero item bias: every term of the score is in the graph.
    root = tmp_path_factory.mktemp("export")
    made = untrained_setup(root, **{"model.tied_output": False})
    bundle = load_bundle(made.bundle)
    assert bundle.model.item_bias is not None
    with torch.no_grad():
        bundle.model.item_bias.copy_(torch.linspace(-1, 1, bundle.model.vocab_size))
    save_bundle(
        made.bundle,
        bundle.model,
        bundle.config,
        bundle.users,
        bundle.items,
        bundle.item_counts,
        data_fingerprint=bundle.fingerprint,
    )
    return made


def test_pad_left_keeps_the_most_recent_items() -> None:
    got = pad_left([np.array([1, 2, 3, 4, 5]), np.array([7]), np.array([], dtype=np.int64)], 3)
    assert got.tolist() == [[3, 4, 5], [0, 0, 7], [0, 0, 0]]
    assert got.dtype == np.int64


@pytest.mark.slow  # torch.onnx's exporter takes ~15 s on two cores
def test_cli_export_matches_torch_scores_for_any_batch(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    out = tmp_path / "onnx" / "model.onnx"
    status = main(["export", "--format", "onnx", "--model", str(setup.bundle), "--out", str(out), "--json"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    bundle = load_bundle(setup.bundle)
    assert result["out"] == str(out) and result["bytes"] == out.stat().st_size
    assert result["check"]["same_top10"] is True and result["check"]["max_abs_diff"] < 1e-4
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]  # one file, no temp left

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["recsys.max_len"] == str(bundle.model.max_len)
    assert meta["recsys.n_items"] == str(bundle.n_items)
    assert meta["recsys.data_fingerprint"] == bundle.fingerprint

    # Every user's real history (cut to max_len - 1, left-padded), plus an empty one.
    events = setup.dataset.all_events()
    width = bundle.model.max_len - 1
    histories = pad_left([events.get(i) for i in range(len(events))] + [np.zeros(0, np.int64)], width)
    with torch.inference_mode():
        want = bundle.model.predict_next(torch.from_numpy(histories)).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (declared,) = session.get_inputs()
    assert declared.name == INPUT_NAME and declared.shape[1] == width
    for rows in (slice(0, 1), slice(0, len(histories))):
        got = session.run(None, {INPUT_NAME: histories[rows]})[0]
        assert got.shape == want[rows].shape == (rows.stop, bundle.n_items + 2)
        assert np.isneginf(got[:, [0, -1]]).all()  # PAD and MASK never rank
        np.testing.assert_allclose(got[:, 1:-1], want[rows][:, 1:-1], rtol=0, atol=1e-5)
        assert (np.argsort(-got, axis=1)[:, :5] == np.argsort(-want[rows], axis=1)[:, :5]).all()


def test_missing_exporter_is_a_clear_error(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now raises ImportError
    with pytest.raises(ExportError, match=r"recsys\[onnx\]"):
        export_onnx(load_bundle(setup.bundle).model, tmp_path / "m.onnx")
    status = main(["export", "--model", str(setup.bundle), "--out", str(tmp_path / "m.onnx")])
    assert status == 2
    assert "onnx extra" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_unknown_format_is_refused(setup: Setup, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--format", "tflite", "--model", str(setup.bundle), "--out", str(tmp_path / "m")])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "options",
    [{"relative_attention": True}, {"embedding_size": 8, "share_layers": True, "drop_path": 0.1}],
    ids=["deberta", "albert"],
)
def test_bert_family_options_export_with_the_same_scores(tmp_path: Path, options: dict[str, object]) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from recsys.config import ModelConfig
    from recsys.inference.export import check_onnx
    from recsys.model.bert4rec import BERT4Rec

    torch.manual_seed(0)
    cfg = ModelConfig.model_validate(
        {"hidden_size": 16, "n_heads": 2, "max_len": 12, "dropout": 0.1, "attention_dropout": 0.1, **options}
    )
    model = BERT4Rec(30, cfg).eval()
    check = check_onnx(model, export_onnx(model, tmp_path / "model.onnx"))
    assert check.same_top10 and check.max_abs_diff < 1e-4


def test_item_features_export_with_the_same_scores(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from recsys.config import ModelConfig
    from recsys.inference.export import check_onnx
    from recsys.model.bert4rec import BERT4Rec, FeatureIndex

    torch.manual_seed(0)
    cfg = ModelConfig.model_validate(
        {"hidden_size": 16, "n_heads": 2, "max_len": 12, "dropout": 0.1, "attention_dropout": 0.1}
    )
    counts = torch.tensor([0, *[i % 3 if 0 < i < 31 else 0 for i in range(32)]])  # PAD, items, MASK rows
    index = torch.randint(0, 5, (int(counts.sum()),))
    model = BERT4Rec(30, cfg, FeatureIndex(counts.cumsum(0), index, 5)).eval()
    check = check_onnx(model, export_onnx(model, tmp_path / "model.onnx"))
    assert check.same_top10 and check.max_abs_diff < 1e-4
