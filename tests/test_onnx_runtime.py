"""Precision by CPU capability, and the ONNX Runtime path of geosearch-lite-clip against torch fp32.

The accuracy gate of issue 10: ONNX Runtime vectors are interchangeable with torch fp32 ones (same
model id) only if every image's cosine to fp32 is >= 0.99, with the caption memory off and on, and
UCM test text-to-image mR stays within 0.5 points.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch

from geosearch import load_embedder
from geosearch.errors import ModelError
from geosearch.evaluation.datasets import flatten_captions, load_images, load_records
from geosearch.evaluation.retrieval import retrieval_metrics
from geosearch.plugins import cpu, lite_clip, onnx_runtime
from geosearch.plugins.open_clip import OpenClipEmbedder

pytestmark = pytest.mark.slow  # exports and runs the real default embedder

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY_CNN_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
"""A tiny open_clip ModifiedResNet CLIP: a CNN image tower, random weights, built in milliseconds."""


# ---- precision by capability -------------------------------------------------------------------
def _tiny_cnn_embedder(precision: str) -> OpenClipEmbedder:
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CNN_CFG)  # type: ignore[arg-type]
    tok = open_clip.get_tokenizer("RN50", context_length=8)
    return OpenClipEmbedder(
        model,
        tok,
        model_id="tiny-cnn",
        image_size=32,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        device="cpu",
        precision=precision,
    )


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_uses_bf16_only_with_native_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(cpu, "native_bf16", lambda: native)
    emb = _tiny_cnn_embedder("auto")
    assert emb.image_precision == ("bf16" if native else "fp32")
    assert emb.text_precision == "fp32" and emb.channels_last  # CNN towers always run channels_last
    info = cpu.runtime_info(emb)
    assert info["runtime"] == "torch" and info["precision"] == "auto"
    assert info["image_precision"] == emb.image_precision
    assert {"capability", "native_bf16", "torch_threads", "cpu_model"} <= set(info)
    vectors = emb.encode_images(np.zeros((2, 32, 32, 3), np.uint8))
    assert vectors.shape == (2, 16) and vectors.dtype == np.float32
    # an explicit precision is obeyed whatever the CPU
    assert _tiny_cnn_embedder("fp32").image_precision == "fp32"
    assert _tiny_cnn_embedder("bf16").image_precision == "bf16"


@pytest.mark.parametrize(
    ("capability", "avx512_bf16", "amx", "expected"),
    [
        ("AVX2", True, False, False),  # AVX-512 kernels capped (ATEN_CPU_CAPABILITY=avx2): emulated
        ("AVX2", False, False, False),
        ("AVX512", False, False, False),  # e.g. Skylake-X, Zen 4 without the bf16 extension
        ("AVX512", True, False, True),
        ("AVX512", False, True, True),  # AMX tiles (Sapphire Rapids)
    ],
)
def test_native_bf16_needs_wide_kernels_and_bf16_hardware(
    monkeypatch: pytest.MonkeyPatch, capability: str, avx512_bf16: bool, amx: bool, expected: bool
) -> None:
    monkeypatch.setattr(cpu, "capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert cpu.native_bf16() is expected


def test_cpu_info_reports_this_machine() -> None:
    info = cpu.cpu_info()
    assert info["capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["torch_threads"] == torch.get_num_threads()
    assert isinstance(info["native_bf16"], bool) and info["cores"] >= 1


# ---- runtime selection and errors ----------------------------------------------------------------
def test_bad_runtime_and_precision_names_are_model_errors(tiny_clip_spec: str) -> None:
    with pytest.raises(ModelError, match="runtime must be one of"):
        load_embedder(runtime="tensorrt")
    with pytest.raises(ModelError, match="geosearch-lite-clip only"):
        load_embedder(tiny_clip_spec, runtime="onnx")
    with pytest.raises(ModelError, match="runtime must be one of"):
        load_embedder(tiny_clip_spec, runtime="ort")
    assert load_embedder(tiny_clip_spec, runtime="auto").runtime == "torch"  # type: ignore[attr-defined]
    with pytest.raises(ModelError, match="torch only"):
        lite_clip.load_lite_clip(runtime="onnx", precision="bf16")
    with pytest.raises(ModelError, match="needs runtime='onnx'"):
        lite_clip.load_lite_clip(runtime="torch", precision="int8")
    with pytest.raises(ModelError, match="precision must be one of"):
        lite_clip.load_lite_clip(precision="fp8")


def test_default_embedder_runs_onnx_on_cpu(embedder: Any) -> None:
    """`auto` is ONNX Runtime fp32 on CPU: ~2x torch fp32 (benchmarks/models.py) and inside the accuracy
    gate, so it keeps the torch model id."""
    if embedder.device.type != "cpu":
        pytest.skip("ONNX Runtime is the CPU path")
    assert embedder.runtime == "onnx" and embedder.image_precision == "fp32"
    assert embedder.model_id == lite_clip.model_id()
    info = cpu.runtime_info(embedder)
    assert info["runtime"] == "onnx" and info["onnxruntime"]


def test_auto_falls_back_to_torch_when_the_export_cannot_be_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache dir that cannot exist (a file stands in its way): auto warns and runs torch, onnx refuses."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file" / "cache"))
    emb: Any = lite_clip.load_lite_clip(runtime="auto", memory=False)
    assert emb.runtime == "torch" and "running geosearch-lite-clip in torch" in caplog.text
    with pytest.raises(ModelError, match="ONNX runtime failed"):
        lite_clip.load_lite_clip(runtime="onnx", memory=False)


# ---- accuracy gate on real images -----------------------------------------------------------------
@pytest.fixture(scope="module")
def gate_images() -> list[np.ndarray]:
    """36 UCM test images (256 px) and 24 AID test images (150 px): two batches of real chips."""
    ucm = load_records(SHARED / "ucm-captions", "test")[::6][:36]
    aid = load_records(SHARED / "aid-rsicd", "test")[::40][:24]
    return [load_images(ucm, size=256), load_images(aid, size=150)]


def _encode(emb: Any, batches: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([emb.encode_images(b) for b in batches])


@pytest.mark.parametrize("memory", [False, True])
def test_onnx_fp32_passes_the_gate(gate_images: list[np.ndarray], memory: bool) -> None:
    ref = lite_clip.load_lite_clip(runtime="torch", precision="fp32", memory=memory)
    ort = lite_clip.load_lite_clip(runtime="onnx", precision="fp32", memory=memory)
    assert ort.model_id == ref.model_id  # interchangeable by the gate below
    cos = np.sum(_encode(ref, gate_images) * _encode(ort, gate_images), axis=1)
    assert float(cos.min()) >= 0.99
    texts = ["a", "oil storage tanks near the port", " ".join(["many green trees around a parking lot"] * 3)]
    batch = ort.encode_texts(texts)
    np.testing.assert_allclose(batch, ref.encode_texts(texts), atol=1e-5)
    # exact padding trimming: one at a time (fewer columns) equals the batch
    np.testing.assert_allclose(np.stack([ort.encode_texts([t])[0] for t in texts]), batch, atol=1e-5)


def test_int8_tower_is_close_but_gets_its_own_id(gate_images: list[np.ndarray]) -> None:
    """Static int8 from the shipped ranges: close to fp32 (measured min ~0.98) but under the 0.99 gate,
    so its vectors must never share a collection with fp32 ones."""
    ref = lite_clip.load_lite_clip(runtime="torch", precision="fp32", memory=False)
    int8: Any = lite_clip.load_lite_clip(runtime="onnx", precision="int8", memory=False)
    assert int8.image_precision == "int8" and int8.model_id == f"{ref.model_id}-int8"
    cos = np.sum(_encode(ref, gate_images) * _encode(int8, gate_images), axis=1)
    assert float(cos.mean()) > 0.985 and float(cos.min()) > 0.95


def test_int8_refuses_ranges_of_other_weights(tmp_path: Path) -> None:
    model: Any = lite_clip.build_model()
    meta = onnx_runtime.read_ranges()
    (tmp_path / "r.json").write_text(json.dumps({**meta, "towers": "0" * 20}))
    with pytest.raises(ModelError, match="other image tower weights"):
        onnx_runtime.int8_image_tower(model, 224, tmp_path / "r.json")
    (tmp_path / "g.json").write_text(json.dumps({**meta, "graph": "0" * 16}))
    with pytest.raises(ModelError, match="another ONNX graph"):
        onnx_runtime.int8_image_tower(model, 224, tmp_path / "g.json")


def test_exports_are_cached_by_tower_weights() -> None:
    model: Any = lite_clip.build_model()
    first = onnx_runtime.image_tower(model, 224)
    stamp = first.stat().st_mtime_ns
    assert onnx_runtime.image_tower(model, 224) == first and first.stat().st_mtime_ns == stamp
    with torch.no_grad():
        model.visual.trunk.conv_head.weight.mul_(1.01)  # other tower weights: another cache entry
    assert onnx_runtime.state_digest(model.visual.trunk, "224") not in str(first)
    assert onnx_runtime._cache_dir("lite0", onnx_runtime.state_digest(model.visual.trunk, "224")) != first.parent


@pytest.mark.slow
def test_onnx_ucm_test_mean_recall_within_half_a_point() -> None:
    recs = load_records(SHARED / "ucm-captions", "test")
    images = load_images(recs)
    texts, owner = flatten_captions(recs)
    scores = []
    for runtime in ("torch", "onnx"):
        emb = lite_clip.load_lite_clip(runtime=runtime, precision="fp32")
        scores.append(retrieval_metrics(emb.encode_images(images), emb.encode_texts(texts), owner))
    t2i = [float(np.mean([s["t2i"][k] for k in ("R@1", "R@5", "R@10")])) for s in scores]
    assert abs(t2i[0] - t2i[1]) <= 0.5, scores
    assert abs(scores[0]["mR"] - scores[1]["mR"]) <= 0.5, scores


# ---- where the runtime is reported -------------------------------------------------------------------
def test_health_reports_the_runtime(fresh_engine: Any) -> None:
    from litestar.testing import TestClient

    from geosearch.api import create_app

    with TestClient(app=create_app(fresh_engine)) as client:
        runtime = client.get("/health").json()["runtime"]
    assert runtime["runtime"] == fresh_engine.embedder.runtime
    assert runtime["image_precision"] == fresh_engine.embedder.image_precision
    assert runtime["capability"] == torch.backends.cpu.get_cpu_capability() and runtime["torch_threads"] >= 1


def test_eval_json_has_a_runtime_block(ucm_dir: Path) -> None:
    from geosearch.evaluation import run_evaluation

    result = run_evaluation(ucm_dir, limit=4, captioner="nearest-caption", fast_captioner=None, model_runtime="torch")
    runtime = result["runtime"]
    assert runtime["runtime"] == "torch" and runtime["precision"] == "auto"
    assert {"capability", "native_bf16", "torch_threads", "image_precision"} <= set(runtime)
    json.dumps(result)  # the --json output stays serialisable


def test_cli_model_runtime_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from geosearch import cli

    for command in (["ingest", "x.tif"], ["search", "a road"], ["serve"], ["scenes"]):
        args = cli._parser().parse_args([*command, "--model-runtime", "torch"])
        assert cli._config(args).model_runtime == "torch"
    monkeypatch.setenv("GEOSEARCH_MODEL_RUNTIME", "onnx")
    assert cli._config(cli._parser().parse_args(["scenes"])).model_runtime == "onnx"
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["scenes", "--model-runtime", "tensorrt"])
