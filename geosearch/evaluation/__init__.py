"""Evaluation, part of the runtime (`geosearch eval`): Karpathy-format datasets and the metrics reported on them.

    datasets   read captions.json + images/ (records, captions, classes, decoded images)
    retrieval  R@1/5/10 both ways, mR, zero-shot scene classification
    captions   BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap)
    run        one evaluation run: embedder + both captioners on a dataset split
    cli        `geosearch eval` (argument parsing, the report table)

Training (`geosearch.training`) builds on these modules; nothing here imports training.
"""

from geosearch.evaluation.captions import CAPTION_KEYS, caption_metrics, java_available, simple_tokenize
from geosearch.evaluation.cli import format_report, main
from geosearch.evaluation.run import run_evaluation

__all__ = [
    "CAPTION_KEYS",
    "caption_metrics",
    "format_report",
    "java_available",
    "main",
    "run_evaluation",
    "simple_tokenize",
]
