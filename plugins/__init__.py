"""Model plugins: the embedders and captioners the engine loads by spec (and their shared helpers).

A model plugin is a factory registered in the ``geosearch.embedders`` or ``geosearch.captioners``
entry-point group; its name is the spec prefix it answers to (``open_clip:ViT-B-32/openai``).
"""

from geosearch.plugins.base import Captioner, Embedder

__all__ = ["Captioner", "Embedder"]
