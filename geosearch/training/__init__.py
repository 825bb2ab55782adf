"""Training of the default models' trained parts; not runtime (install with `pip install 'geosearch[train]'`).

Entry points: `python -m geosearch.training.embedder` (geosearch-lite-clip's heads) and
`python -m geosearch.training.captioner` (lite-capret's prefix mapper, the nearest-caption bank).
Datasets and metrics come from `geosearch.evaluation`; nothing at runtime imports this package.

    extra               the `train` extra's modules, checked before an entry point runs
    augment             dihedral symmetries (shared by both trainers) and the embedder's field views

  geosearch-lite-clip (embedder):
    features            frozen-tower features of image views and texts, cached by recipe
    recipe              `Recipe`: every setting behind the shipped heads
    splits              a dataset split as cached features
    heads               the trained projections and their open_clip on-disk form
    loop                the masked CLIP training loop, checkpoint chosen on val
    scoring             val/test metrics of heads on cached features
    memory              the caption memory shipped beside the heads
    embedder            CLI

  lite-capret and nearest-caption (captioners):
    captioner_features  embedder vectors of dihedral views, cached by embedder fingerprint
    bank                the nearest-caption bank and its k
    mapper              the prefix-mapper training loop and config.json
    captioner           CLI
"""
