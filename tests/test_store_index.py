"""The store's persisted index (llm2labels/store/index.py): written by rename, extended by scanning what it
does not cover, rebuilt when it is missing or wrong, and never trusted with a key it cannot tell apart."""

from __future__ import annotations

import json
import logging
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest

from llm2labels.grid import Crop
from llm2labels.normalize import normalize_label
from llm2labels.postprocess import Scoring
from llm2labels.score_run import REGENERATIONS, score_run
from llm2labels.scoring import NoFilter, TokenAggregator
from llm2labels.store import SampleStore, StoreWriter, sample_key, skip_key
from llm2labels.store import records as store_records
from llm2labels.store.index import index_path, read_index, scan
from llm2labels.work import Plan, RunKeys, plan

FP = {"model": "org/some-model", "prompt": "p", "seed": 0}
CROPS = [Crop("full", (0.0, 0.0, 1.0, 1.0), 4)]
WORDS = ["apple", "boat", "cloud", "desk", "egg", "fern", "goat", "hill", "iris", "jar", "kite", "lamp", "moss",
         "nest", "oak", "pear", "quilt", "rock", "sand", "tent", "urn", "vase", "wall", "yarn", "zebra", "bell",
         "cart", "drum", "fork", "gate", "harp", "ink", "jug", "key", "leaf", "mug", "net", "owl", "pen", "rug"]


def _uid(i: int) -> str:
    return f"{i * 7919:024x}"


def _rec(i: int, k: int, text: str = "['a']") -> dict:
    """A sample record whose text is one token."""
    return {"key": sample_key(_uid(i), "full", k), "image": _uid(i), "sample": k, "text": text,
            "token_ends": [len(text)], "logprobs": [-0.25]}


def _keys_by_reading(store: SampleStore) -> dict[str, str]:
    """key -> text of every stored line, read from the sample files with json (the index not involved)."""
    out: dict[str, str] = {}
    for path in sorted(store.dir.glob("samples-*.jsonl")):
        for line in path.read_bytes().split(b"\n")[:-1]:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            out.setdefault(record["key"], record.get("text"))
    return out


def _check_all_found(store: SampleStore) -> None:
    """Every key on disk is found, with its own record; a few absent keys are not."""
    store.refresh()
    expected = _keys_by_reading(store)
    assert len(store) == len(expected)
    for key, text in expected.items():
        assert key in store and store.get(key)["text"] == text
    for absent in ("nope|full|0", sample_key(_uid(10**6), "full", 0), sample_key(_uid(1), "full", 99)):
        assert absent not in store and store.get(absent) is None


def test_a_closed_file_gets_an_index_that_the_next_load_uses_instead_of_scanning(tmp_path: Path) -> None:
    store = SampleStore(tmp_path, FP)
    w = store.writer()
    w.write([_rec(i, k) for i in range(50) for k in range(4)])
    w.close()
    entries, covered = read_index(w.path)
    assert covered == w.path.stat().st_size and len(entries) == 200
    assert np.all(entries.hashes[1:] >= entries.hashes[:-1])  # sorted by hash
    # each entry is the line at its offset: the same as a scan of the file finds
    scanned, end = scan(w.path)
    rows = lambda e: sorted(zip(e.hashes.tolist(), e.offsets.tolist(), e.lengths.tolist()))  # noqa: E731
    assert end == covered and rows(scanned) == rows(entries)
    lines = w.path.read_bytes().split(b"\n")[:-1]
    starts = np.cumsum([0] + [len(x) + 1 for x in lines[:-1]])
    assert sorted(entries.offsets.tolist()) == starts.tolist()
    assert sorted(entries.lengths.tolist()) == sorted(len(x) + 1 for x in lines)
    store.refresh()
    assert store.index.scanned == 0 and store.index.unindexed == 0
    _check_all_found(store)


def test_an_index_whose_file_was_appended_to_covers_the_old_part_and_the_rest_is_scanned(tmp_path: Path) -> None:
    """A resumed writer: the file has an index, then more lines (the last one torn by a kill)."""
    store = SampleStore(tmp_path, FP)
    w = store.writer()
    w.write([_rec(i, 0) for i in range(20)])
    w.close()
    first = w.path.stat().st_size
    resumed = StoreWriter(w.path)
    resumed.write([_rec(i, 1) for i in range(20)])  # not closed: killed before it could write an index
    with open(w.path, "ab") as fh:
        fh.write(json.dumps(_rec(99, 0)).encode()[:30])
    assert read_index(w.path)[1] == first
    store.refresh()
    assert store.index.scanned == 20 and len(store) == 40
    _check_all_found(store)
    # the reader kept what it scanned: the next load scans nothing
    assert read_index(w.path)[1] == w.path.stat().st_size - 30
    store.refresh()
    assert store.index.scanned == 0 and len(store) == 40
    # a resumed writer that closes extends the index itself
    again = StoreWriter(w.path)
    again.write([_rec(i, 2) for i in range(5)])  # after the torn bytes: those stay a line that is no record
    again.close()
    assert read_index(w.path)[1] == w.path.stat().st_size
    store.refresh()
    assert store.index.scanned == 0
    _check_all_found(store)
    assert len(store) == 45


def test_an_index_that_no_longer_matches_its_file_is_rebuilt(tmp_path: Path) -> None:
    store = SampleStore(tmp_path, FP)
    w = store.writer()
    w.write([_rec(i, 0, text="['" + "x" * i + "']") for i in range(30)])
    w.close()
    lines = w.path.read_bytes().splitlines(keepends=True)
    extra = json.dumps(_rec(30, 0), separators=(",", ":")).encode() + b"\n"
    w.path.write_bytes(b"".join([lines[0][:20] + b"\n", *lines[1:], extra]))  # edited in place: shifted
    assert read_index(w.path) is None  # its last line is not where it says
    _check_all_found(store)
    assert store.index.unindexed == 1 and len(store) == 30 and sample_key(_uid(0), "full", 0) not in store


@pytest.mark.parametrize("how", ["torn", "foreign", "unsorted", "empty"])
def test_a_damaged_index_file_is_ignored(tmp_path: Path, how: str) -> None:
    store = SampleStore(tmp_path, FP)
    w = store.writer()
    w.write([_rec(i, 0) for i in range(30)])
    w.close()
    path = index_path(w.path)
    data = path.read_bytes()
    if how == "torn":
        path.write_bytes(data[: len(data) - 7])
    elif how == "foreign":
        path.write_bytes(b"x" * len(data))
    elif how == "unsorted":
        entries, covered = read_index(w.path)
        n = len(entries)
        path.write_bytes(data[: 32] + entries.hashes[::-1].tobytes() + data[32 + 8 * n:])
    else:
        path.write_bytes(b"")
    _check_all_found(store)
    assert store.index.unindexed == 1
    store.refresh()
    assert store.index.unindexed == 0  # rebuilt once


KILL_IN_INDEX_WRITE = """
import os, signal, sys
from llm2labels.store import SampleStore, sample_key
store = SampleStore(sys.argv[1], {fp!r})
def die(src, dst):  # the temporary index is half written when the process is killed, before its rename
    os.truncate(src, os.path.getsize(src) // 2)
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = die
w = store.writer()
w.write([{{"key": sample_key(f"{{i:024x}}", "full", 0), "text": "t"}} for i in range(100)])
w.close()
"""


@pytest.mark.slow
def test_a_kill_during_the_index_write_leaves_no_index_and_loses_no_sample(tmp_path: Path) -> None:
    script = textwrap.dedent(KILL_IN_INDEX_WRITE.format(fp=FP))
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)])
    assert proc.returncode == -9
    store = SampleStore(tmp_path, FP)
    (data,) = store.dir.glob("samples-*.jsonl")
    leftovers = list((store.dir / "index").iterdir())
    assert [p.name.endswith(".tmp") for p in leftovers] == [True]  # the temporary file, never renamed
    assert read_index(data) is None
    store.refresh()
    assert len(store) == 100 and store.index.unindexed == 1
    assert read_index(data)[1] == data.stat().st_size  # indexed by the reader, for the next loads


def test_a_store_written_before_indexes_is_indexed_once_and_says_so(tmp_path: Path, caplog) -> None:
    store = SampleStore(tmp_path, FP)
    for part in range(3):  # three files written the way the store wrote them before it kept indexes
        lines = "".join(json.dumps(_rec(i, part), separators=(",", ":")) + "\n" for i in range(40))
        (store.dir / f"samples-r0-{part}-old.jsonl").write_text(lines)
    with caplog.at_level(logging.INFO, logger="llm2labels"):
        store.refresh()
    assert "indexed 3 sample files" in caplog.text and "(120 records)" in caplog.text
    _check_all_found(store)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="llm2labels"):
        store.refresh()
    assert "indexed" not in caplog.text and store.index.scanned == 0


def test_a_read_only_store_is_indexed_in_memory(tmp_path: Path, caplog) -> None:
    store = SampleStore(tmp_path, FP)
    (store.dir / "samples-r0-1-old.jsonl").write_text(json.dumps(_rec(1, 0), separators=(",", ":")) + "\n")
    with patch("llm2labels.store.index.os.replace", side_effect=PermissionError(13, "read-only")):
        with caplog.at_level(logging.INFO, logger="llm2labels"):
            assert store.refresh() == 1
    assert "every run does it again" in caplog.text
    assert not list((store.dir / "index").glob("*"))  # no temporary file left behind


@pytest.mark.parametrize("bits", [0, 2, 5])
def test_keys_whose_hashes_collide_are_told_apart_by_their_text(tmp_path: Path, bits: int) -> None:
    """With a 0-5 bit hash nearly every key shares its hash with others. Lookups must give each stored key
    its own line; an absent key may be taken for stored only where its hash is held by a single line (the
    lookup trusts a unique hash), and the read of that line finds it out: a run scores every image from its
    own samples, regenerating the ones found missing at read."""
    with patch.object(store_records, "KEY_HASH_MASK", (1 << bits) - 1):
        store = SampleStore(tmp_path, FP)
        rng = random.Random(bits)
        stored = {(i, k) for i in range(40) for k in range(4) if rng.random() < 0.7}
        order = sorted(stored)
        rng.shuffle(order)
        for part in (order[::2], order[1::2]):
            w = store.writer()
            w.write([_rec(i, k, text=f"['{WORDS[i]} {WORDS[k]}']") for i, k in part])
            w.close()
        _check_all_found(store)
        uids = [_uid(i) for i in range(40)]
        index = store.index
        lines_per_hash = {h: int(n) for h, n in zip(*np.unique(index.hashes, return_counts=True))}
        positions = RunKeys(CROPS).positions(uids, store)
        for i in range(40):
            for k in range(4):
                p, key = int(positions[i, k]), sample_key(_uid(i), "full", k)
                if (i, k) in stored:
                    assert p >= 0 and index.read_key(p) == key
                elif p >= 0:  # trusted unique hash: the line holds another key
                    assert lines_per_hash[int(index.hashes[p])] == 1 and index.read_key(p) != key
        entries = [type("E", (), {"path": Path(u), "rel": u})() for u in uids]
        items = plan(entries, uids, CROPS, 0, store, 10**8)
        planned = {(int(r), int(k)) for r, row in zip(items.rows, items.missing) for k in np.flatnonzero(row)}
        missing = {(i, k) for i in range(40) for k in range(4)} - stored
        assert planned <= missing and all(positions[i, k] >= 0 for i, k in missing - planned)

        def regenerate(items) -> bool:
            writer = store.writer()
            writer.write([_rec(int(w.uid, 16) // 7919, k, text=f"['{WORDS[int(w.uid, 16) // 7919]} {WORDS[k]}']")
                          for w in items for c in w.crops for k, _ in c.samples])
            writer.close()
            return True

        regenerate(plan(entries, uids, CROPS, 0, store, 10**8))  # what the app generates before scoring
        store.refresh()
        scoring = Scoring(TokenAggregator("product"), "max", NoFilter())
        _, skipped, _ = score_run(entries, uids, CROPS, store, scoring, tmp_path / "images.jsonl", 10**8, 1, 0,
                                  regenerate)
        assert skipped == []
        lines = [json.loads(x) for x in (tmp_path / "images.jsonl").read_text().splitlines()]
        assert [x["uid"] for x in lines] == uids
        for i, x in enumerate(lines):
            assert sorted(x["kept"]) == sorted({normalize_label(f"{WORDS[i]} {WORDS[k]}") for k in range(4)})


@pytest.mark.parametrize("columns", [False, True])
@pytest.mark.parametrize("stored", ["sample", "skip record"])
def test_an_absent_key_that_shares_a_stored_keys_hash_is_found_out_when_read(tmp_path: Path, stored: str,
                                                                            columns: bool) -> None:
    """A hash held by one line only is taken on trust by the lookup; the read checks the key (before the
    record is decoded: another image's skip record is a colliding key, not a damaged record to quarantine),
    and from then on that hash is resolved by key. Through score_run, per occurrence or from the parsed
    columns: the image is planned again and regenerated."""
    with patch.object(store_records, "KEY_HASH_MASK", 0):  # every key hashes to 0
        store = SampleStore(tmp_path, FP)
        crops = [Crop("full", (0.0, 0.0, 1.0, 1.0), 1)]
        w = store.writer()
        w.write([_rec(1, 0, text="['apple']") if stored == "sample" else
                 {"key": skip_key(_uid(1)), "reason": "not an image"}])
        w.close()
        store.refresh()
        uids = [_uid(1), _uid(2)]
        entries = [type("E", (), {"path": Path(u), "rel": u})() for u in uids]
        if stored == "sample":
            assert RunKeys(crops).positions(uids, store).tolist() == [[0], [0]]  # trusted: both "stored"
        regenerated = []

        def regenerate(items) -> bool:
            regenerated.extend(w.uid for w in items)
            writer = store.writer()
            writer.write([_rec(2, 0, text="['boat']")])
            writer.close()
            return True

        scoring = Scoring(TokenAggregator("product"), "max", NoFilter())
        ranker, skipped, damaged = score_run(entries, uids, crops, store, scoring, tmp_path / "images.jsonl",
                                             10**8, 1, 0, regenerate, columns=columns)
        assert regenerated == [_uid(2)] and damaged == 0 and not (store.dir / "damaged.jsonl").exists()
        lines = [json.loads(x) for x in (tmp_path / "images.jsonl").read_text().splitlines()]
        if stored == "sample":
            assert skipped == [] and ranker.n_images == 2
            assert [(x["uid"], list(x["kept"])) for x in lines] == [(_uid(1), ["apple"]), (_uid(2), ["boat"])]
        else:
            assert skipped == [{"path": _uid(1), "reason": "not an image"}] and ranker.n_images == 1
            assert [(x["uid"], list(x["kept"])) for x in lines] == [(_uid(2), ["boat"])]
        assert store.get(sample_key(_uid(3), "full", 0)) is None  # read, found out, not served


def test_the_index_arrays_are_all_a_run_holds_per_sample(tmp_path: Path) -> None:
    store = SampleStore(tmp_path, FP)
    w = store.writer()
    w.write([_rec(i, k) for i in range(1000) for k in range(4)])
    w.close()
    store.refresh()
    index = store.index
    # hash 8 + permutation 4 + offset 8 + length 4 + ambiguity flag 1, and the bucket directory (2048 + 1
    # buckets of 4 bytes for 4000 records) and the file starts (2 of 8 bytes)
    assert index.nbytes == 4000 * (8 + 4 + 8 + 4 + 1) + 2049 * 4 + 2 * 8


def test_the_plan_travels_as_rows_and_bits_and_is_rebuilt_the_same(tmp_path: Path) -> None:
    store = SampleStore(tmp_path, FP)
    w = store.writer()
    w.write([_rec(i, k) for i in range(0, 300, 2) for k in range(4)] + [_rec(i, 1) for i in range(1, 300, 2)])
    w.close()
    store.refresh()
    uids = [_uid(i) for i in range(300)] + [_uid(1)]  # the same content twice: planned once
    entries = [type("E", (), {"path": Path(f"/d/{u}.jpg"), "rel": f"{u}.jpg"})() for u in uids]
    items = plan(entries, uids, CROPS, 7, store, 10**8)
    assert isinstance(items, Plan) and len(items) == 150
    payload = pickle.loads(pickle.dumps(items.compact()))
    assert sum(a.nbytes for a in payload) == 150 * (4 + 1)
    other = Plan(entries, uids, CROPS, 7, np.empty(0, np.int64), np.empty((0, 4), bool))  # another rank
    assert other.digest() == items.digest()
    rebuilt = other.with_compact(payload)
    assert list(rebuilt) == list(items)
    assert [w.uid for w in items[1::4]] == [_uid(i) for i in range(1, 300, 2)][1::4]
    first = items[0]
    assert first.rel == f"{_uid(1)}.jpg" and [k for k, _ in first.crops[0].samples] == [0, 2, 3]
    shifted = Plan(entries[1:] + entries[:1], uids[1:] + uids[:1], CROPS, 7, items.rows, items.missing)
    assert shifted.digest() != items.digest()


def test_a_regeneration_that_keeps_making_damaged_records_ends_in_skips(tmp_path: Path) -> None:
    store = SampleStore(tmp_path, FP)
    crops = [Crop("full", (0.0, 0.0, 1.0, 1.0), 1)]
    bad = {**_rec(1, 0), "token_ends": "12"}  # complete JSON, but no sample
    w = store.writer()
    w.write([bad, _rec(2, 0, text="['apple']")])
    w.close()
    store.refresh()
    uids = [_uid(1), _uid(2)]
    entries = [type("E", (), {"path": Path(u), "rel": u})() for u in uids]
    rounds = []

    def regenerate(items) -> bool:
        rounds.append([w.uid for w in items])
        writer = store.writer()
        writer.write([bad])
        writer.close()
        return True

    scoring = Scoring(TokenAggregator("product"), "max", NoFilter())
    ranker, skipped, damaged = score_run(entries, uids, crops, store, scoring, tmp_path / "images.jsonl", 10**8,
                                         1, 0, regenerate)
    assert rounds == [[_uid(1)]] * REGENERATIONS and damaged == REGENERATIONS + 1
    assert skipped == [{"path": _uid(1), "reason": "damaged sample record (regenerated by the next run)"}]
    assert ranker.n_images == 1


class _Rank0:
    """A strategy as rank 0 sees it: broadcast sends (and records) its own object."""

    def __init__(self, agree: bool = True) -> None:
        self.sent: list = []
        self.agree = agree

    def broadcast(self, obj, src=0):
        self.sent.append(obj)
        return obj

    def reduce_boolean_decision(self, decision, all=True):
        return decision and self.agree


class _OtherRank(_Rank0):
    """Another rank: broadcast returns what rank 0 sent."""

    def __init__(self, rank0: _Rank0) -> None:
        super().__init__(rank0.agree)
        self.received = list(rank0.sent)

    def broadcast(self, obj, src=0):
        return self.received.pop(0)


def test_rank_zero_sends_its_plan_compact_when_the_ranks_list_the_same_images(tmp_path: Path) -> None:
    from llm2labels.predict import rank0_plan

    store = SampleStore(tmp_path, FP)
    w = store.writer()
    w.write([_rec(i, k) for i in range(0, 40, 3) for k in range(4)])
    w.close()
    store.refresh()
    uids = [_uid(i) for i in range(40)]
    entries = [type("E", (), {"path": Path(f"/d/{u}"), "rel": u})() for u in uids]
    mine = plan(entries, uids, CROPS, 1, store, 10**8)
    rank0 = _Rank0()
    assert list(rank0_plan(rank0, mine)) == list(mine)
    digest, payload = rank0.sent
    assert digest == mine.digest() and sum(a.nbytes for a in payload) == len(mine) * 5
    # another rank that planned nothing (it read the store later) rebuilds rank 0's plan over its listing
    theirs = Plan(entries, uids, CROPS, 1, np.empty(0, np.int64), np.empty((0, 4), bool))
    assert list(rank0_plan(_OtherRank(rank0), theirs)) == list(mine)
    # listings that differ: the ranks agree to send the work items themselves
    rank0 = _Rank0(agree=False)
    rank0_plan(rank0, mine)
    assert rank0.sent[1] == list(mine) and all(type(x).__name__ == "ImageWork" for x in rank0.sent[1])
    assert list(rank0_plan(_OtherRank(rank0), theirs[:0])) == list(mine)


@pytest.mark.parametrize("uids", [["ab", "abc", "a"], ["0f" * 12, "1e" * 12, "zz" * 12], ["é", "ab"],
                                  ["0123456789abcdef0123", "fedcba9876543210fedc"]])
def test_array_hashes_and_checks_equal_the_per_key_ones(uids: list[str]) -> None:
    # mixed lengths whose total is a multiple of the first (3 x 2 = 6 characters), non-hex, non-ASCII
    rests = ["full|0", "t0|7"]
    hashes = store_records.key_hashes(store_records.uid_bits_array(uids),
                                      np.array([store_records.rest_bits(r) for r in rests], np.uint64))
    checks = store_records.key_checks(uids, rests)
    for i, uid in enumerate(uids):
        for j, rest in enumerate(rests):
            assert int(hashes[i, j]) == store_records.key_hash(f"{uid}|{rest}")
            assert int(checks[i, j]) == store_records.key_check(f"{uid}|{rest}")
