"""The `train` extra (`pip install 'geosearch[train]'`): what training imports, checked before it runs."""

from __future__ import annotations

import importlib.util

TRAIN_EXTRA = {
    # import name -> distribution, as listed under [project.optional-dependencies] train
    "numpy": "numpy",
    "open_clip": "open_clip_torch",
    "safetensors": "safetensors",
    "scipy": "scipy",
    "timm": "timm",
    "torch": "torch",
}
EVAL_EXTRA = {"pycocoevalcap": "pycocoevalcap"}
"""The `eval` extra, which `train` includes: training validates captioners with the caption metrics."""
INSTALL_HINT = "pip install 'geosearch[train]'"


def missing_train_modules() -> list[str]:
    """Distributions of the train extra whose module cannot be found (nothing is imported)."""
    needed = {**TRAIN_EXTRA, **EVAL_EXTRA}
    return sorted(dist for module, dist in needed.items() if importlib.util.find_spec(module) is None)


def require_train_extra() -> None:
    """Exit with a one-line message (no traceback) when the train extra is not installed."""
    missing = missing_train_modules()
    if missing:
        raise SystemExit(f"error: training needs {', '.join(missing)}; install it with: {INSTALL_HINT}")
