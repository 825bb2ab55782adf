"""`geosearch eval` end to end on a few UCM test images, plus the caption-metric plumbing."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import geosearch
from geosearch.evaluation import CAPTION_KEYS, caption_metrics, java_available, main


@pytest.mark.slow
def test_eval_json_has_all_keys_and_sane_ranges(ucm_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--dataset", str(ucm_dir), "--split", "test", "--limit", "20", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out)  # the whole stdout is one JSON object
    assert set(result) == {
        "retrieval", "zero_shot", "captioning", "captioning_fast", "model", "dataset", "split", "n_images", "runtime"
    }
    assert {"capability", "torch_threads", "runtime", "image_precision"} <= set(result["runtime"])
    assert result["n_images"] == 20
    ret = result["retrieval"]
    assert set(ret) == {"t2i", "i2t", "mR", "mR6"}
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


def tiny_karpathy(root: Path, source: Path, per_class: dict[str, int]) -> Path:
    """A Karpathy-format folder (captions.json with `class`, images/) of a few AID test images."""
    import shutil

    meta = json.loads((source / "captions.json").read_text())
    images = []
    for cls, n in per_class.items():
        rows = [im for im in meta["images"] if im["class"] == cls and im["split"] == "test"][:n]
        images.extend(rows)
    (root / "images").mkdir(parents=True)
    for im in images:
        shutil.copy(source / "images" / im["filename"], root / "images" / im["filename"])
    (root / "captions.json").write_text(json.dumps({"images": images, "dataset": "tiny"}))
    return root


@pytest.mark.slow
def test_eval_on_a_tiny_karpathy_fixture_reports_zero_shot(
    aid_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any Karpathy-format folder with classes: retrieval + zero-shot; classes far apart are told apart."""
    data = tiny_karpathy(tmp_path / "tiny", aid_dir, {"beach": 6, "farmland": 6, "storagetanks": 6})
    rc = main(["--dataset", str(data), "--split", "test", "--json", "--captioner", "nearest-caption",
               "--fast-captioner", ""])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["n_images"] == 18 and result["dataset"] == "tiny"
    assert result["zero_shot"]["n_classes"] == 3
    # Chance is 33 %; beach / farmland / storage tanks are among the easiest AID classes.
    assert result["zero_shot"]["accuracy"] >= 80
    assert result["captioning_fast"]["CIDEr"] is None  # the fast captioner was skipped


def test_zero_shot_accuracy_uses_the_nearest_class_prompt() -> None:
    import numpy as np

    from geosearch.evaluation.retrieval import zero_shot_accuracy

    words = {"beach": [1.0, 0.0], "farmland": [0.0, 1.0]}

    def encode(prompts: list[str]) -> np.ndarray:  # type: ignore[type-arg]
        return np.array([words["beach" if "beach" in p else "farmland"] for p in prompts], np.float32)

    images = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], np.float32)
    out = zero_shot_accuracy(images, ["beach", "farmland", "farmland"], encode)
    assert out == {"accuracy": pytest.approx(100 * 2 / 3), "n_classes": 2}


def _imports_training(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        if any(n == "geosearch.training" or n.startswith("geosearch.training.") for n in names):
            return True
    return False


def test_runtime_and_evaluation_never_import_training() -> None:
    """Training builds on evaluation, never the other way; no runtime module imports training (lazily either)."""
    from importlib.util import find_spec

    package = Path(geosearch.__file__).parent
    runtime = [p for p in package.rglob("*.py") if "training" not in p.relative_to(package).parts]
    for mapped in ("geosearch.plugins", "geosearch.tilers", "geosearch.schemas"):  # found, not imported
        spec = find_spec(mapped)
        assert spec is not None and spec.submodule_search_locations
        runtime += Path(next(iter(spec.submodule_search_locations))).rglob("*.py")
    assert any(p.parent.name == "evaluation" for p in runtime)
    assert [p for p in runtime if _imports_training(p)] == []


def test_eval_imports_without_training() -> None:
    code = (
        "import sys, geosearch.cli, geosearch.evaluation, geosearch.evaluation.run; "
        "print(sorted(m for m in sys.modules if m.startswith('geosearch.training')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout
    assert out.strip() == "[]"
