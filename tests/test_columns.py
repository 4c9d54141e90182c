"""Post-processing from parsed columns (llm2labels/parsed/) against the per-occurrence code it replaces:
the same images.jsonl, the same ranked labels in the same order with the same scores, for every token
aggregator, pooling, filter and scorer."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from unittest.mock import patch

import pytest
from test_postprocess import _random_record

from llm2labels import score_run
from llm2labels.data.folder import ImageEntry
from llm2labels.grid import Crop
from llm2labels.postprocess import Scoring, rank_images
from llm2labels.scoring import BothFilter, NoFilter, PercentileFilter, ThresholdFilter, TokenAggregator
from llm2labels.scoring.rank import occ, occ_prob, prob
from llm2labels.store import SampleStore, StoreWriter, sample_key, skip_key

CROPS = [Crop("full", (0.0, 0.0, 1.0, 1.0), 3), Crop("t0", (0.0, 0.0, 0.5, 0.5), 2)]


def _store(root: Path, n: int, seed: int = 1) -> tuple[SampleStore, list[ImageEntry], list[str]]:
    """n images x 5 samples in two crops, random texts (odd ones included); image 3 is a skip record,
    image 5 lacks a sample; written by three writers in shuffled order."""
    rng = random.Random(seed)
    store = SampleStore(root, {"model": "test"})
    uids = [f"{i * 7919:024x}" for i in range(n)]
    records = []
    for uid in uids:
        for crop in CROPS:
            for k in range(crop.samples):
                record = _random_record(rng, uid, k)
                record["key"] = sample_key(uid, crop.key, k)
                records.append(record)
    records = [r for r in records if r["key"] != sample_key(uids[5], "t0", 1)]
    records.append({"key": skip_key(uids[3]), "reason": "not an image"})
    rng.shuffle(records)
    for part in (records[::3], records[1::3], records[2::3]):
        w = store.writer()
        w.write(part)
        w.close()
    store.refresh()
    return store, [ImageEntry(Path(f"/d/{u}.jpg"), f"{u}.jpg") for u in uids], uids


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("columns"), 60)


FILTERS = [PercentileFilter(68), ThresholdFilter(0.3), BothFilter(50, 0.2), NoFilter(), PercentileFilter(0)]


@pytest.mark.parametrize("how", ["product", "avg", "min", "max"])
@pytest.mark.parametrize("pool", ["max", "avg", "min", "product"])
def test_columns_give_what_the_per_occurrence_code_gives(stored, tmp_path: Path, how: str, pool: str) -> None:
    store, entries, uids = stored
    usable, _ = score_run.select(entries, uids, CROPS, store, 10**8)
    for image_filter in FILTERS:
        scoring = Scoring(TokenAggregator(how), pool, image_filter)
        plain = rank_images(score_run.score_all(usable, store, scoring, tmp_path / "plain.jsonl"))
        ranker, bad = score_run.score_columns(usable, store, scoring, tmp_path / "columns.jsonl", 1, chunk=7)
        assert bad == []
        assert (tmp_path / "columns.jsonl").read_bytes() == (tmp_path / "plain.jsonl").read_bytes()
        assert ranker.n_images == plain.n_images == 58
        for scorer in (occ_prob, occ, prob):
            assert ranker.rank(scorer) == plain.rank(scorer)


def _columns(store: SampleStore, workers: int = 1):
    from llm2labels.parsed.columns import Columns

    return Columns(store.dir, store.index.files, store.index.covered, workers)


def _outputs(store, entries, uids, tmp_path: Path, name: str, columns: bool) -> tuple[bytes, list]:
    scoring = Scoring(TokenAggregator("avg"), "max", PercentileFilter(68))
    out = tmp_path / f"{name}.jsonl"
    if columns:
        usable, _ = score_run.select(entries, uids, CROPS, store, 10**8)
        ranker, bad = score_run.score_columns(usable, store, scoring, out, 2, chunk=9)
        assert bad == []
    else:
        usable, _ = score_run.select(entries, uids, CROPS, store, 10**8)
        ranker = rank_images(score_run.score_all(usable, store, scoring, out))
    return out.read_bytes(), ranker.rank(occ_prob)


def test_parts_parsed_in_workers_and_in_many_ranges_give_the_same(tmp_path: Path) -> None:
    from llm2labels.parsed import columns as parsed_columns

    store, entries, uids = _store(tmp_path / "s", 30)
    expected = _outputs(store, entries, uids, tmp_path, "plain", columns=False)
    with patch.object(parsed_columns, "RANGE_BYTES", 3000):  # parts of a few records each
        assert _columns(store, workers=2).parsed > 3 * 3
        assert _outputs(store, entries, uids, tmp_path, "columns", columns=True) == expected
    assert _columns(store).parsed == 0  # parsed once: every later run reads the parts


def test_a_file_that_grew_is_parsed_from_where_its_parts_end(tmp_path: Path) -> None:
    store, entries, uids = _store(tmp_path / "s", 30)
    first = _columns(store)
    grown = store.index.files[0]
    extra = [{**r, "key": r["key"].replace("|full|", "|extra|")} for r in map(json.loads, grown.read_text().splitlines())]
    resumed = StoreWriter(grown)
    resumed.write(extra[:5])
    resumed.close()
    store.refresh()
    again = _columns(store)
    assert first.parsed == 3 and again.parsed == 1  # only the new tail
    assert len(again.parts) == 4 and again.parts[1].start == first.parts[0].end
    assert _outputs(store, entries, uids, tmp_path, "c", True) == _outputs(store, entries, uids, tmp_path, "p", False)


def test_a_new_parser_version_parses_again_and_removes_the_old_columns(tmp_path: Path) -> None:
    from llm2labels.parsed import columns as parsed_columns

    store, entries, uids = _store(tmp_path / "s", 20)
    old = _columns(store)
    assert old.parsed == 3 and old.root.is_dir()
    with patch.object(parsed_columns, "parse_version", lambda: "v1-another-parser"):
        new = _columns(store)
        assert new.parsed == 3 and new.root.name == "v1-another-parser"
        assert old.root.is_dir()  # used a moment ago: perhaps by a run of the other installation, still going
        assert _outputs(store, entries, uids, tmp_path, "c", True) == _outputs(store, entries, uids, tmp_path, "p",
                                                                                False)
        unused = time.time() - parsed_columns.KEEP_UNUSED_S - 60
        os.utime(old.root / parsed_columns.USED, (unused, unused))
        assert _columns(store).parsed == 0 and old.root.is_dir()  # removed by the run that parses
        shutil.rmtree(new.root / store.index.files[0].name)
        assert _columns(store).parsed == 1 and not old.root.exists()  # the other version's: removed


def test_columns_removed_under_a_run_leave_it_to_the_per_occurrence_code(tmp_path: Path, caplog) -> None:
    from llm2labels.parsed import columns as parsed_columns

    store, entries, uids = _store(tmp_path / "s", 20)
    expected = _outputs(store, entries, uids, tmp_path, "p", False)
    real = parsed_columns.Columns.gather

    def gone(self, *args):
        shutil.rmtree(self.root)  # as a run of another version pruning it would
        return real(self, *args)

    scoring = Scoring(TokenAggregator("avg"), "max", PercentileFilter(68))
    with patch.object(parsed_columns.Columns, "gather", gone):
        ranker, skipped, damaged = score_run.score_run(entries, uids, CROPS, store, scoring,
                                                       tmp_path / "c.jsonl", 10**8, 1, 0, lambda items: False,
                                                       columns=True)
    assert "scoring per occurrence" in caplog.text and damaged == 0
    assert ((tmp_path / "c.jsonl").read_bytes(), ranker.rank(occ_prob)) == expected
    assert [s["path"] for s in skipped] == [entries[3].rel, entries[5].rel]


def test_a_broken_part_that_cannot_be_removed_leaves_the_run_to_the_per_occurrence_code(tmp_path: Path,
                                                                                        caplog) -> None:
    store, entries, uids = _store(tmp_path / "s", 10)
    part = _columns(store).parts[0].folder
    (part / "form.u4").write_bytes(b"")  # cut short
    usable, _ = score_run.select(entries, uids, CROPS, store, 10**8)
    scoring = Scoring(TokenAggregator("product"), "max", NoFilter())
    with patch("llm2labels.parsed.columns.shutil.rmtree"):  # a read-only store: the part stays
        assert score_run.score_columns(usable, store, scoring, tmp_path / "x.jsonl", 1) is None
    assert "are incomplete" in caplog.text and "scoring per occurrence" in caplog.text


def test_a_temporary_part_left_by_a_killed_parse_is_removed_once_old(tmp_path: Path) -> None:
    from llm2labels.parsed import columns as parsed_columns

    store, _, _ = _store(tmp_path / "s", 10)
    folder = _columns(store).root / store.index.files[0].name
    fresh, stale = folder / ".0-100.aaaa.tmp", folder / ".0-200.bbbb.tmp"
    for tmp in (fresh, stale):
        tmp.mkdir()
        (tmp / "form.u4").write_bytes(b"1234")
    old = time.time() - parsed_columns.KEEP_UNUSED_S - 60
    os.utime(stale, (old, old))
    assert _columns(store).parsed == 0
    assert fresh.is_dir() and not stale.exists()  # a parse in progress elsewhere is left alone


def test_the_parser_version_follows_the_parser_and_normaliser_sources(tmp_path: Path) -> None:
    from llm2labels.parsed import version

    package = Path(version.__file__).resolve().parents[1]
    copy = tmp_path / "llm2labels"
    for name in version.SOURCES:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(package / name, copy / name)
    assert version.source_version(copy) == version.parse_version()
    seen = {version.parse_version()}
    for name in ("normalize.py", "parsing.py"):
        (copy / name).write_text((copy / name).read_text() + "\n# changed\n")
        seen.add(version.source_version(copy))
    assert len(seen) == 3
    with patch.object(version.metadata, "version", lambda _: "0.0-other"):
        assert version.source_version(copy) not in seen  # another inflect


@pytest.mark.parametrize("how", ["truncated", "rewritten"])
def test_a_part_that_does_not_match_is_parsed_again(tmp_path: Path, how: str) -> None:
    store, entries, uids = _store(tmp_path / "s", 20)
    parts = _columns(store).parts
    if how == "truncated":  # a column cut short (a full disk, a copy that stopped)
        column = parts[0].folder / "form.u4"
        column.write_bytes(column.read_bytes()[:-4])
    else:  # the sample file rewritten since: another first line, every offset shifted
        path = store.index.files[parts[0].file]
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(lines[1] + b"".join(lines))
        store.refresh()
    assert _columns(store).parsed == 1
    assert _outputs(store, entries, uids, tmp_path, "c", True) == _outputs(store, entries, uids, tmp_path, "p", False)


def test_a_store_whose_columns_cannot_be_written_is_scored_per_occurrence(tmp_path: Path, caplog) -> None:
    store, entries, uids = _store(tmp_path / "s", 10)
    usable, _ = score_run.select(entries, uids, CROPS, store, 10**8)
    scoring = Scoring(TokenAggregator("product"), "max", NoFilter())
    with patch("llm2labels.parsed.columns.save_part", side_effect=PermissionError(13, "Permission denied")):
        assert score_run.score_columns(usable, store, scoring, tmp_path / "x.jsonl", 1) is None
    assert "scoring per occurrence" in caplog.text
    assert score_run.score_columns(usable, store, Scoring(lambda lps: 0.5, "max", NoFilter()),
                                   tmp_path / "y.jsonl", 1) is None  # an aggregator the columns do not hold


@pytest.mark.parametrize("settings", [
    ["filter=percentile"],
    ["filter=both", "filter.t=0.001", "aggregator=min", "pool=avg"],  # the tiny model's p are ~0.006 at most
    ["filter=th", "filter.t=0.001", "aggregator=max", "scorer=occ"],
    ["filter=none", "aggregator=avg", "pool=product", "scorer=prob"],
])
def test_a_tiny_model_run_gives_the_same_files_with_and_without_columns(make_cfg, tmp_path: Path, settings) -> None:
    from llm2labels import app

    common = ["proposer=tiny_instructblip", "proposer.max_new_tokens=16", "dataset.limit=3", "grid=sgc", *settings]
    plain = app.run(make_cfg(*common, "postprocess.columns=false", out="plain"))
    columns = app.run(make_cfg(*common, "postprocess.columns=true", out="columns"))
    assert columns["generations"] == 0 and plain["labels"] == columns["labels"] > 0
    for name in ("images.jsonl", "labels.csv"):
        assert (tmp_path / "columns" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name
    assert list((tmp_path / "cache").glob("*/parsed/*/*/*/form.u4"))


def test_sweep_jobs_that_differ_after_the_model_reuse_the_parsed_columns(make_cfg, tmp_path: Path) -> None:
    from llm2labels import app

    common = ["proposer=tiny_instructblip", "proposer.max_new_tokens=16", "dataset.limit=3", "grid=sg"]
    first = app.run(make_cfg(*common, "filter=percentile", out="first"))

    def parts() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "cache").glob("*/parsed/*/*/*/*")}

    parsed = parts()
    assert first["generations"] > 0 and parsed
    for settings in (["filter=none", "aggregator=avg"], ["filter=both", "filter.t=0.001", "scorer=prob"]):
        job = app.run(make_cfg(*common, *settings, out="-".join(settings)))
        assert job["generations"] == 0 and job["labels"] > 0
        assert parts() == parsed  # the same files, not written again
