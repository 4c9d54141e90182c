"""The Hydra application behind `run.py`: compose the parts, generate what is missing, rank, write outputs."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from llm2labels.data.images import DEFAULT_MAX_PIXELS
from llm2labels.errors import StorageError
from llm2labels.grid import Crop, Grid
from llm2labels.grouping.exports import write_all
from llm2labels.outputs import write_json, write_labels_csv
from llm2labels.postprocess import (
    ImageResult,
    Scoring,
    StoredImage,
    rank_images,
    resolve_workers,
    score_stored,
)
from llm2labels.proposers.base import Proposer
from llm2labels.report import write_report
from llm2labels.scoring.rank import DatasetRanker, to_frame
from llm2labels.settings import check_run_settings
from llm2labels.store import FileHashes, SampleStore, sample_key
from llm2labels.work import ImageWork, effective_crops, plan

log = logging.getLogger("llm2labels")


@dataclass
class Parts:
    dataset: Any
    proposer: Proposer
    grid: Grid
    filter: Any
    aggregator: Any
    scorer: Any
    grouper: Any
    tracker: Any


def build(cfg: DictConfig) -> Parts:
    """Instantiate every component first, so a bad value fails before any work is done."""
    check_run_settings(cfg)
    groups = ("dataset", "proposer", "grid", "filter", "aggregator", "scorer", "grouper")
    made = {name: instantiate(cfg[name]) for name in groups}
    made["tracker"] = instantiate(cfg.logger) if cfg.get("logger") else None
    resolve_workers(cfg.get("postprocess", {}).get("workers"))  # checked now, used after generation
    return Parts(**made)


# The launcher's variables as this process started with them: a Lightning DDP run in this process sets
# LOCAL_RANK, WORLD_SIZE, ... in os.environ for its children and leaves them there.
LAUNCH_ENV = {k: os.environ.get(k, "") for k in ("WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID")}


def joins_process_group(cfg: DictConfig, env: dict[str, str] | None = None) -> bool:
    """Whether this process is one rank of a job started as several processes (by torchrun, SLURM's srun, a
    launcher setting MASTER_ADDR/NODE_RANK by hand, or Lightning's own DDP launcher for its child processes).

    Such a process enters the predict loop even when its own plan is empty: the ranks work from rank 0's plan
    (see predict.ProposalData), and one that stayed out would leave the others waiting for it at a barrier.
    `env` defaults to the variables this process was started with (LAUNCH_ENV).
    """
    env = LAUNCH_ENV if env is None else env

    def count(name: str) -> int:
        value = env.get(name, "")
        return int(value) if value.isdigit() else 1

    nodes = cfg.trainer.get("num_nodes", 1)
    return (
        (isinstance(nodes, int) and nodes > 1)
        or count("WORLD_SIZE") > 1
        or (bool(env.get("SLURM_PROCID")) and count("SLURM_NTASKS") > 1)
    )


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


def generate(cfg: DictConfig, proposer: Proposer, store: SampleStore, items: list[ImageWork],
             max_pixels: int) -> int:
    """Run the Lightning predict loop over the pending images; returns this process's global rank."""
    from llm2labels.predict import ProposalData, ProposalModule, StoreWriterCallback

    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    # Under a Hydra multirun, `ddp` re-launches the whole sweep in each child process: spawn instead.
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN and trainer_cfg.get("strategy") == "ddp":
        log.info("multirun: using strategy=ddp_spawn instead of ddp")
        trainer_cfg["strategy"] = "ddp_spawn"
    store.close()
    trainer = instantiate(trainer_cfg, callbacks=[StoreWriterCallback(store)])
    module = ProposalModule(proposer, proposer.logprob_mode)
    data = ProposalData(items, cfg.loader.batch_size, cfg.loader.num_workers, max_pixels)
    trainer.predict(module, datamodule=data, return_predictions=False)
    return trainer.global_rank


def select(entries: list[Any], uids: list[str], crops: list[Crop], store: SampleStore, max_pixels: int
           ) -> tuple[list[StoredImage], list[dict[str, str]]]:
    """The images to score (every sample stored) and the skipped ones with their reason, in dataset order."""
    keys = [(c.key, k) for c in crops for k in range(c.samples)]
    usable: list[StoredImage] = []
    skipped: list[dict[str, str]] = []
    for entry, uid in zip(entries, uids):
        reason = store.skip_reason(uid, max_pixels)
        if reason is not None:
            skipped.append({"path": entry.rel, "reason": reason})
            continue
        locs = [store.locate(sample_key(uid, c, k)) for c, k in keys]
        if any(loc is None for loc in locs):
            skipped.append({"path": entry.rel, "reason": "samples missing (generation did not finish)"})
            continue
        usable.append((uid, entry.rel, locs))  # type: ignore[arg-type]
    return usable, skipped


def score_all(usable: list[StoredImage], store: SampleStore, parts: Parts, pool: str, images_path: Path,
              workers: int = 1) -> Iterator[ImageResult]:
    """Score the usable images from the store, writing their labels to images.jsonl as they come (by
    `workers` processes, see postprocess.score_stored; the output is the same whatever their number).
    An image with a damaged record comes out with `damaged` set and no images.jsonl line."""
    scoring = Scoring(parts.aggregator, pool, parts.filter)
    try:
        fh = open(images_path, "w", encoding="utf-8")
    except OSError as e:
        raise StorageError.writing(images_path, e) from e
    with fh, tqdm(total=len(usable), desc="scoring", unit="img", disable=None) as bar:
        for lines, results in score_stored(usable, store.reader(), scoring, workers):
            try:
                fh.write(lines)
                fh.flush()  # a killed run keeps every image scored so far
            except OSError as e:
                raise StorageError.writing(images_path, e) from e
            bar.update(len(results))
            yield from results


def _set_aside_damaged(results: Iterator[ImageResult], damaged: list[ImageResult]) -> Iterator[ImageResult]:
    """The scored results; those of images with a damaged record go to `damaged` instead."""
    for result in results:
        if result.damaged:
            damaged.append(result)
        else:
            yield result


def postprocess(cfg: DictConfig, parts: Parts, entries: list[Any], uids: list[str], crops: list[Crop],
                store: SampleStore, out_dir: Path) -> tuple[DatasetRanker, list[dict[str, str]], int]:
    """Score and rank every usable image: (ranker, skipped images, damaged records found).

    A damaged record (a line that is complete but no sample) is quarantined (SampleStore.quarantine); in a
    single-process run its image is generated again at once and everything is scored again, otherwise it
    is skipped and the next run regenerates it."""
    max_pixels = getattr(parts.dataset, "max_pixels", DEFAULT_MAX_PIXELS)
    workers = resolve_workers(cfg.get("postprocess", {}).get("workers"))
    found = 0
    while True:
        usable, skipped = select(entries, uids, crops, store, max_pixels)
        damaged: list[ImageResult] = []
        results = score_all(usable, store, parts, cfg.pool, out_dir / "images.jsonl", workers)
        ranker = rank_images(_set_aside_damaged(results, damaged))
        found += store.quarantine(loc for r in damaged for loc in r.damaged)
        if not damaged:
            return ranker, skipped, found
        log.warning("%d images have damaged sample records: left out of the index (%s)", len(damaged),
                    store.dir / "damaged.jsonl")
        store.refresh()
        items = plan(entries, uids, crops, cfg.seed, store, max_pixels)
        if not items or joins_process_group(cfg):  # other ranks have gone: the next run regenerates them
            by_path = {r.path for r in damaged}
            skipped += [{"path": e.rel, "reason": "damaged sample record (regenerated by the next run)"}
                        for e in entries if e.rel in by_path]
            return ranker, skipped, found
        store.check_writable()
        generate(cfg, parts.proposer, store, items, max_pixels)
        store.refresh()


def evaluate(cfg: DictConfig, out_dir: Path, ranked: list, vocabulary: dict[str, Any], class_list: str,
             truth: dict[str, list[int]], crops: list[Crop], scorer: Any) -> dict[str, Any]:
    """metrics.json (+ PR curve files) for a dataset with ground truth; see evaluation.run_metrics."""
    from llm2labels.evaluation.run_metrics import evaluate_run

    ev = cfg.evaluation
    entries = ([s["members"] for s in vocabulary["synsets"]] if ev.entries == "synsets"
               else [r.label for r in ranked])
    metrics = evaluate_run(out_dir, entries, class_list, truth, sum(c.samples for c in crops), scorer,
                           k=ev.k, max_k=ev.max_k)
    metrics["entries"] = ev.entries
    write_json(out_dir / "metrics.json", metrics)
    full, seen = metrics["full"], metrics.get("seen", {})
    log.info("%s: seen P@%d %.2f R %.2f AUC %.2f | full R %.2f | image mAP %.2f", class_list, metrics["k"],
             seen.get("P", 0.0), seen.get("R", 0.0), seen.get("AUC", 0.0), full["R"], metrics["image"]["mAP"])
    return metrics


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """The whole job; returns the summary (None on non-zero ranks, which only generate)."""
    watch, parts = Stopwatch(), build(cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()
    max_pixels = getattr(parts.dataset, "max_pixels", DEFAULT_MAX_PIXELS)
    with watch.stage("scan"):
        entries = parts.dataset.entries()
        store = SampleStore(cfg.cache.dir, {**parts.proposer.fingerprint(), "seed": cfg.seed})
        hashes = FileHashes(Path(cfg.cache.dir).expanduser() / "filehash.jsonl")
        uids = list(tqdm(hashes.uids(e.path for e in entries), total=len(entries), desc="hashing", disable=None))
        store.refresh()
    crops = effective_crops(parts.grid, parts.proposer)
    needed = {sample_key(u, c.key, k) for u in set(uids) for c in crops for k in range(c.samples)}
    hits = sum(k in store for k in needed)
    items = plan(entries, uids, crops, cfg.seed, store, max_pixels)
    log.info("%d images, %d crops each, %d samples stored, %d images to generate", len(entries), len(crops),
             hits, len(items))
    with watch.stage("generate"):
        if items or joins_process_group(cfg):
            if items:
                store.check_writable()  # before the model loads
            if generate(cfg, parts.proposer, store, items, max_pixels) != 0:
                return None
        store.refresh()
    with watch.stage("postprocess"):
        ranker, skipped, damaged = postprocess(cfg, parts, entries, uids, crops, store, out_dir)
        ranked = ranker.rank(parts.scorer) if ranker.n_images else []
    n_images = ranker.n_images
    hits -= damaged  # a damaged record was no hit: its sample was made again
    summary = {
        "images": n_images, "skipped": skipped, "crops": n_images * len(crops),
        "generations": sum(k in store for k in needed) - hits, "cache_hits": hits, "damaged_records": damaged,
        "labels": len(ranked), "proposer": parts.proposer.fingerprint(), "grid": repr(parts.grid),
        "filter": getattr(parts.filter, "name", type(parts.filter).__name__), "store": str(store.dir),
        **scan_notes(parts.dataset),
    }
    # The ranked list and the summary first: a grouper or an evaluation that fails keeps them (and a rerun
    # takes everything else from the store in seconds).
    with watch.stage("write"):
        write_labels_csv(out_dir / "labels.csv", ranked)
        summary["seconds"] = watch.seconds
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
    summary["seconds"] = watch.seconds
    write_json(out_dir / "summary.json", summary)
    if cfg.report:
        with watch.stage("report"):
            write_report(out_dir, {e.rel: e.path for e in entries})
        summary["seconds"] = watch.seconds
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
