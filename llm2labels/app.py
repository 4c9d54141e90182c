"""The Hydra application behind `run.py`: compose the parts, generate what is missing, rank, write outputs."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from llm2labels.data.protocol import Dataset
from llm2labels.grid import Crop, Grid
from llm2labels.grouping.exports import write_all
from llm2labels.grouping.vocabulary import Grouper
from llm2labels.launch import joins_process_group
from llm2labels.postprocess import Scoring, resolve_workers
from llm2labels.proposers.base import Proposer
from llm2labels.report import write_report
from llm2labels.runfiles import write_json, write_labels_csv
from llm2labels.score_run import score_run
from llm2labels.scoring.aggregate import TokenAggregator
from llm2labels.scoring.filters import ImageFilter
from llm2labels.scoring.rank import Scorer, to_frame
from llm2labels.settings import check_run_settings
from llm2labels.store import FileHashes, SampleStore
from llm2labels.work import ImageWork, Lookup, effective_crops, look_up, plan, stored_counts

log = logging.getLogger("llm2labels")


@dataclass
class Parts:
    """The run's components, one per config group."""

    dataset: Dataset
    proposer: Proposer
    grid: Grid
    filter: ImageFilter
    aggregator: TokenAggregator
    scorer: Scorer
    grouper: Grouper
    tracker: Any  # tracking.WandbTracker, or None


def build(cfg: DictConfig) -> Parts:
    """Instantiate every component first, so a bad value fails before any work is done."""
    check_run_settings(cfg)
    groups = ("dataset", "proposer", "grid", "filter", "aggregator", "scorer", "grouper")
    made = {name: instantiate(cfg[name]) for name in groups}
    made["tracker"] = instantiate(cfg.logger) if cfg.get("logger") else None
    resolve_workers(cfg.get("postprocess", {}).get("workers"))  # checked now, used after generation
    return Parts(**made)


class Stopwatch:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


def evaluate(cfg: DictConfig, out_dir: Path, ranked: list, vocabulary: dict[str, Any], class_list: str,
             truth: dict[str, list[int]], crops: list[Crop], scorer: Any) -> dict[str, Any]:
    """metrics.json (+ PR curve files) for a dataset with ground truth; see evaluation.run_metrics."""
    from llm2labels.evaluation.run_metrics import evaluate_run

    ev = cfg.evaluation
    entries = ([s["members"] for s in vocabulary["synsets"]] if ev.entries == "synsets"
               else [r.label for r in ranked])
    metrics = evaluate_run(out_dir, entries, class_list, truth, sum(c.samples for c in crops), scorer,
                           k=ev.k, max_k=ev.max_k, precision_divisor=ev.precision_divisor)
    metrics["entries"] = ev.entries
    write_json(out_dir / "metrics.json", metrics)
    full, seen = metrics["full"], metrics.get("seen", {})
    log.info("%s: seen P@%d %.2f R %.2f AUC %.2f | full R %.2f | image mAP %.2f", class_list, metrics["k"],
             seen.get("P", 0.0), seen.get("R", 0.0), seen.get("AUC", 0.0), full["R"], metrics["image"]["mAP"])
    return metrics


def generate(cfg: DictConfig, parts: Parts, store: SampleStore, items: Sequence[ImageWork]) -> int:
    """The predict loop (predict.py) over `items`; returns this process's global rank. Lightning is imported
    only here, so a run with nothing to generate never loads it."""
    from llm2labels.predict import generate as predict_loop

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    return predict_loop(trainer, cfg.loader, parts.proposer, store, items, parts.dataset, multirun)  # type: ignore[arg-type]


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """The whole job; returns the summary (None on non-zero ranks, which only generate)."""
    watch, parts = Stopwatch(), build(cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()
    max_pixels = parts.dataset.max_pixels
    with watch.stage("scan"):
        entries = parts.dataset.entries()
        store = SampleStore(cfg.cache.dir, {**parts.proposer.fingerprint(), "seed": cfg.seed})
        hashes = FileHashes(Path(cfg.cache.dir).expanduser() / "filehash.jsonl")
        uids = list(tqdm(hashes.uids(e.path for e in entries), total=len(entries), desc="hashing", disable=None))
        store.refresh()
    crops = effective_crops(parts.grid, parts.proposer)
    found: Lookup | None = look_up(uids, crops, store, max_pixels)  # valid until the store is refreshed
    _, hits = found.counts(uids)
    items = plan(entries, uids, crops, cfg.seed, store, max_pixels, found)
    log.info("%d images, %d crops each, %d samples stored, %d images to generate", len(entries), len(crops),
             hits, len(items))
    in_group = joins_process_group(cfg.trainer)
    with watch.stage("generate"):
        if items or in_group:
            if items:
                store.check_writable()  # before the model loads
            if generate(cfg, parts, store, items) != 0:
                return None
            store.refresh()
            found = None

    def regenerate(damaged: Sequence[ImageWork]) -> bool:  # the other ranks have gone after their loop
        if in_group:
            return False
        store.check_writable()
        generate(cfg, parts, store, damaged)
        return True

    with watch.stage("postprocess"):
        post = cfg.get("postprocess", {})
        scoring = Scoring(parts.aggregator, cfg.pool, parts.filter)
        ranker, skipped, damaged = score_run(entries, uids, crops, store, scoring, out_dir / "images.jsonl",
                                             max_pixels, resolve_workers(post.get("workers")), cfg.seed,
                                             regenerate, found, columns=post.get("columns", True))
        ranked = ranker.rank(parts.scorer) if ranker.n_images else []
    n_images = ranker.n_images
    stored = hits if found is not None and not damaged else stored_counts(uids, crops, store)[1]
    hits -= damaged  # a damaged record was no hit: its sample was made again
    summary = {
        "images": n_images, "skipped": skipped, "crops": n_images * len(crops),
        "generations": stored - hits, "cache_hits": hits, "damaged_records": damaged,
        "labels": len(ranked), "proposer": parts.proposer.fingerprint(), "grid": repr(parts.grid),
        "filter": getattr(parts.filter, "name", type(parts.filter).__name__), "store": str(store.dir),
        **scan_notes(parts.dataset),
        "seconds": watch.seconds,  # the stopwatch's own dict: every write of summary.json has its stages
    }
    # The ranked list and the summary first: a grouper or an evaluation that fails keeps them (and a rerun
    # takes everything else from the store in seconds).
    with watch.stage("write"):
        write_labels_csv(out_dir / "labels.csv", ranked)
        write_json(out_dir / "summary.json", summary)
    with watch.stage("group"):
        vocabulary = parts.grouper(ranked)
    with watch.stage("write"):
        write_all(vocabulary, out_dir)  # vocabulary.json + OpenSeg, COCO, Label Studio and CSV exports
    metrics = None
    truth, class_list = parts.dataset.ground_truth(), getattr(parts.dataset, "class_list", None)
    if truth and class_list and n_images:
        with watch.stage("evaluate"):
            metrics = evaluate(cfg, out_dir, ranked, vocabulary, class_list, truth, crops, parts.scorer)
    write_json(out_dir / "summary.json", summary)
    if cfg.report:
        with watch.stage("report"):
            by_rel = {e.rel: e for e in entries}  # a Path is made only for the few images shown
            write_report(out_dir, lambda rel: by_rel[rel].path)
        write_json(out_dir / "summary.json", summary)
    if parts.tracker is not None:
        # The job's own keys; Hydra's node is present only when composed with it (tests).
        config = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
        parts.tracker.log(out_dir, config, summary, to_frame(ranked), metrics)
    store.close()
    log.info("%d labels from %d images (%d skipped) -> %s", len(ranked), n_images, len(skipped), out_dir)
    return summary


def scan_notes(dataset: Any) -> dict[str, Any]:
    """What the dataset's scan left out without listing it as an image (`FolderDataset.not_listed`)."""
    notes = getattr(dataset, "not_listed", None)
    return {"not_listed": notes} if notes else {}
