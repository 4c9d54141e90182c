"""The run's own keys (those that are no component's arguments), checked before anything is loaded.

Components check their arguments in their constructors (`app.build` instantiates them all first); the keys
here are read by the app itself, so they are checked here, each with a one-line ConfigError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llm2labels.errors import ConfigError, int_at_least, require
from llm2labels.evaluation.vocabulary import PRECISION_DIVISORS

POOLS = ("max", "avg", "min", "product")
ENTRIES = ("labels", "synsets")


def check_run_settings(cfg: Mapping[str, Any]) -> None:
    """seed, report, pool, postprocess.columns, loader.*, evaluation.*; ConfigError naming the first bad key."""
    loader, evaluation = cfg.get("loader") or {}, cfg.get("evaluation") or {}
    postprocess = cfg.get("postprocess") or {}
    k, max_k = evaluation.get("k"), evaluation.get("max_k", 5000)
    divisor = evaluation.get("precision_divisor", "k")
    require({
        f"seed must be a whole number, got {cfg.get('seed')!r}": int_at_least(cfg.get("seed", 0), -(2**63)),
        f"report must be true or false, got {cfg.get('report')!r}": isinstance(cfg.get("report", True), bool),
        f"postprocess.columns must be true or false, got {postprocess.get('columns')!r}":
            isinstance(postprocess.get("columns", True), bool),
        f"pool must be one of {', '.join(POOLS)}, got {cfg.get('pool')!r}": cfg.get("pool", "max") in POOLS,
        f"loader.batch_size must be a whole number >= 1 (images per predict step), got "
        f"{loader.get('batch_size')!r}": int_at_least(loader.get("batch_size", 1), 1),
        f"loader.num_workers must be a whole number >= 0 (0 = decode in the main process), got "
        f"{loader.get('num_workers')!r}": int_at_least(loader.get("num_workers", 0), 0),
        f"evaluation.entries must be labels or synsets, got {evaluation.get('entries')!r}":
            evaluation.get("entries", "labels") in ENTRIES,
        f"evaluation.k must be a whole number >= 1 or null (the list's default), got {k!r}":
            k is None or int_at_least(k, 1),
        f"evaluation.max_k must be a whole number >= 1, got {max_k!r}": int_at_least(max_k, 1),
        f"evaluation.precision_divisor must be k or min_k_len (what P@K divides by: K or min(K, #L)), got "
        f"{divisor!r}": divisor in PRECISION_DIVISORS,
    })
    cache = (cfg.get("cache") or {}).get("dir")
    if not isinstance(cache, str) or not cache.strip():
        raise ConfigError(f"cache.dir must be a folder path, got {cache!r}")
