"""``geosearch-train embedder|captioner ARGS``: the training entry points, runnable from any directory.

A console script of its own (not a ``geosearch`` sub-command) so that no runtime module imports
training; it needs ``pip install 'geosearch[train]'``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = "usage: geosearch-train {embedder,captioner} [--help | ARGS]"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["embedder"]:
        from geosearch.training.embedder import main as train_embedder

        train_embedder(args[1:])
        return 0
    if args[:1] == ["captioner"]:
        from geosearch.training.captioner import main as train_captioner

        return train_captioner(args[1:])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
