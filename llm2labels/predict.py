"""The Lightning predict loop: batches of images in, sample records streamed into the store by each rank.

Lightning only lives here and in the app: the proposer is plain Python, and every record is written by the
rank that produced it (one store file per rank), so nothing is gathered in memory or duplicated across ranks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from llm2labels.data.protocol import ImageSource
from llm2labels.errors import ImageError, LimitError
from llm2labels.grid import pixel_box
from llm2labels.proposers.base import CropRequest, Proposer
from llm2labels.store import SampleStore, StoreWriter, new_writer, sample_key, skip_key
from llm2labels.work import CropWork, ImageWork, Plan

log = logging.getLogger("llm2labels")


class ProposalDataset(Dataset):
    """Decodes (through the run's dataset, `ImageSource.load`) and grids one image per item, in loader
    workers when `num_workers` > 0."""

    def __init__(self, items: Sequence[ImageWork], source: ImageSource) -> None:
        self.items, self.source = items, source

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        work = self.items[i]
        if not work.crops:  # the placeholder of a rank with no share (see ProposalData): nothing to load
            return {"work": work, "error": None, "crops": []}
        try:
            image = self.source.load(Path(work.path))
        except ImageError as err:  # a limit of this run's is remembered under that limit only
            limit = self.source.max_pixels if isinstance(err, LimitError) else None
            return {"work": work, "error": str(err), "limit": limit, "crops": []}
        w, h = image.size
        crops = []
        for c in work.crops:
            box = pixel_box(c.box, w, h)
            crops.append(image.crop(box) if box != (0, 0, w, h) else image)
        return {"work": work, "error": None, "crops": crops, "size": (w, h)}



def _collate(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


class ProposalModule(L.LightningModule):
    """Wraps a proposer: `predict_step` turns a batch of gridded images into store records."""

    def __init__(self, proposer: Proposer, logprob_mode: str) -> None:
        super().__init__()
        self.proposer, self.logprob_mode = proposer, logprob_mode

    def on_predict_start(self) -> None:
        self.proposer.setup(str(self.device))

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int = 0) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        requests: list[CropRequest] = []
        owners: list[tuple[ImageWork, CropWork]] = []
        for item in batch:
            work: ImageWork = item["work"]
            if item["error"] is not None:
                records.append({"key": skip_key(work.uid, item.get("limit")), "image": work.uid,
                                "path": work.rel, "reason": item["error"]})
                continue
            for crop, image in zip(work.crops, item["crops"]):
                requests.append(CropRequest(image, [seed for _, seed in crop.samples]))
                owners.append((work, crop))
        generations = self.proposer.propose(requests) if requests else []
        for (work, crop), gens in zip(owners, generations):
            for (k, seed), g in zip(crop.samples, gens):
                records.append({
                    "key": sample_key(work.uid, crop.key, k), "image": work.uid, "path": work.rel,
                    "crop": crop.key, "box": crop.box, "sample": k, "seed": seed, "text": g.text,
                    "token_ids": g.token_ids, "token_ends": g.token_ends, "logprobs": g.logprobs,
                    "logprob_mode": self.logprob_mode,
                })
        return records


class StoreWriterCallback(BasePredictionWriter):
    """Appends each batch's records to this rank's store file as soon as the batch is done."""

    def __init__(self, store_dir: Path) -> None:
        super().__init__(write_interval="batch")
        self.store_dir = store_dir  # a path, not the store: this callback travels to spawned ranks
        self._writer: StoreWriter | None = None

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not prediction:
            return
        if self._writer is None:
            self._writer = new_writer(self.store_dir, tag=f"r{trainer.global_rank}")
        self._writer.write(prediction)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._writer is not None:
            self._writer.close()
        trainer.strategy.barrier("store-written")


class ProposalData(L.LightningDataModule):
    """Shards rank 0's pending images over all ranks of all nodes (round robin), so no image is padded in twice."""

    def __init__(self, items: Sequence[ImageWork], batch_size: int, num_workers: int, source: ImageSource) -> None:
        super().__init__()
        self.items, self.batch_size, self.num_workers, self.source = items, batch_size, num_workers, source

    def predict_dataloader(self) -> DataLoader:
        items = rank0_plan(self.trainer.strategy, self.items)
        rank, world = self.trainer.global_rank, self.trainer.world_size
        # Fewer images than ranks (a resumed run's last few): Lightning refuses an empty loader, and a rank that
        # skipped the loop would miss the barrier in StoreWriterCallback, so an idle rank gets one no-op item.
        shard = ProposalDataset(items[rank::world] or [ImageWork("", "", "")], self.source)
        return DataLoader(shard, batch_size=self.batch_size, num_workers=self.num_workers,
                          collate_fn=_collate, persistent_workers=False)


def rank0_plan(strategy: Any, items: Sequence[ImageWork]) -> Sequence[ImageWork]:
    """Rank 0's plan, on every rank. Every rank planned from the store as it read it, and one that read it
    at another moment (another job writing to it, a node started later) would shard a different list.

    A `Plan` travels compact: rank 0 sends its rows and missing-sample bits (~9 bytes an image, `Plan.compact`)
    and each rank rebuilds the items over its own listing, once all ranks agree that their listings are
    rank 0's (`Plan.digest`); otherwise, or for a plain list, the items themselves are sent."""
    if isinstance(items, Plan):
        digest = items.digest()
        same = strategy.reduce_boolean_decision(strategy.broadcast(digest, src=0) == digest, all=True)
        if same:
            payload = strategy.broadcast(items.compact(), src=0)
            log.debug("plan broadcast: %d images in %d bytes", len(payload[0]),
                      payload[0].nbytes + payload[1].nbytes)
            return items.with_compact(payload)
        log.warning("the ranks list different images: rank 0 sends its whole plan instead of its rows")
        items = list(items)
    return strategy.broadcast(items, src=0)


def generate(trainer_cfg: dict[str, Any], loader: Mapping[str, Any], proposer: Proposer, store: SampleStore,
             items: Sequence[ImageWork], source: ImageSource, multirun: bool = False) -> int:
    """Run the Lightning predict loop over the pending images, writing into `store`; returns this process's
    global rank. `trainer_cfg` is the resolved `trainer` config, `loader` the `loader` one."""
    from hydra.utils import instantiate

    trainer_cfg = dict(trainer_cfg)
    # Under a Hydra multirun, `ddp` re-launches the whole sweep in each child process: spawn instead.
    if multirun and trainer_cfg.get("strategy") == "ddp":
        log.info("multirun: using strategy=ddp_spawn instead of ddp")
        trainer_cfg["strategy"] = "ddp_spawn"
    trainer = instantiate(trainer_cfg, callbacks=[StoreWriterCallback(store.dir)])
    module = ProposalModule(proposer, proposer.logprob_mode)
    data = ProposalData(items, loader["batch_size"], loader["num_workers"], source)
    trainer.predict(module, datamodule=data, return_predictions=False)
    return trainer.global_rank
