"""From label occurrences to the ranked candidate list: token aggregation, image filters, dataset ranking."""

from llm2labels.scoring.aggregate import TokenAggregator, pool_grouped
from llm2labels.scoring.filters import BothFilter, NoFilter, PercentileFilter, ThresholdFilter
from llm2labels.scoring.rank import DatasetRanker, RankedLabel, occ, occ_prob, prob, to_frame

__all__ = [
    "BothFilter",
    "DatasetRanker",
    "NoFilter",
    "PercentileFilter",
    "RankedLabel",
    "ThresholdFilter",
    "TokenAggregator",
    "occ",
    "occ_prob",
    "pool_grouped",
    "prob",
    "to_frame",
]
