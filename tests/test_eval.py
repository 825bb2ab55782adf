"""`geosearch eval` end to end on a few UCM test images, plus the caption-metric plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geosearch.evaluation import CAPTION_KEYS, caption_metrics, java_available, main


def test_eval_json_has_all_keys_and_sane_ranges(ucm_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--dataset", str(ucm_dir), "--split", "test", "--limit", "20", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out)  # the whole stdout is one JSON object
    assert set(result) == {"retrieval", "captioning", "captioning_fast", "model", "n_images"}
    assert result["n_images"] == 20
    ret = result["retrieval"]
    assert set(ret) == {"t2i", "i2t", "mR"}
    for way in ("t2i", "i2t"):
        assert set(ret[way]) == {"R@1", "R@5", "R@10"}
        r1, r5, r10 = (ret[way][k] for k in ("R@1", "R@5", "R@10"))
        assert 0 <= r1 <= r5 <= r10 <= 100
    # 20 images: chance R@10 is 50%, a trained model is far above it.
    assert ret["t2i"]["R@10"] > 60
    assert ret["mR"] == pytest.approx(sum(ret["t2i"].values()) / 3)
    for key in ("captioning", "captioning_fast"):
        scores = result[key]
        assert set(scores) == set(CAPTION_KEYS)
        for name in CAPTION_KEYS:
            value = scores[name]
            if name == "METEOR" and not java_available():
                assert value is None
                continue
            assert isinstance(value, float)
            assert 0 <= value <= (10 if name == "CIDEr" else 1), (key, name, value)
        assert scores["BLEU-1"] >= scores["BLEU-4"]
        assert scores["CIDEr"] > 0.3  # far above unrelated text (~0)
    assert result["model"]["embedder"] and result["model"]["captioner"] and result["model"]["fast_captioner"]


def test_eval_bad_dataset_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--dataset", str(tmp_path / "nope"), "--json"])
    captured = capsys.readouterr()
    assert rc != 0
    assert "captions.json" in captured.err and captured.out == ""


def test_caption_metrics_reference_copy_scores_high() -> None:
    refs = [["There is a piece of farmland .", "It is a piece of cropland ."], ["Many planes at the airport ."]]
    good = caption_metrics(refs, ["there is a piece of farmland.", "many planes at the airport."], use_java=False)
    bad = caption_metrics(refs, ["a tennis court.", "a river."], use_java=False)
    assert good["BLEU-1"] == pytest.approx(1.0, abs=1e-6)
    assert good["METEOR"] is None  # METEOR needs Java; it is reported as null, not guessed
    assert good["CIDEr"] is not None and bad["CIDEr"] is not None
    assert good["CIDEr"] > bad["CIDEr"]
