"""P@K, P_class@K, R@K, AUC(PR@K), #L and FP in vocab: by hand, and against a plain loop re-computation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm2labels.classes import ClassInfo
from llm2labels.errors import ConfigError
from llm2labels.evaluation.matching import ClassMatcher
from llm2labels.evaluation.vocabulary import evaluate_ranked, read_ranked, vocabulary_metrics

TOY = ClassMatcher([
    ClassInfo(0, "wall", ("wall",)),
    ClassInfo(1, "person", ("person", "man", "woman")),
    ClassInfo(2, "wardrobe", ("wardrobe", "closet")),
    ClassInfo(3, "closet", ("closet",)),
    ClassInfo(4, "door", ("door",)),
])


def scalars(r) -> tuple[float, float, float]:
    return r.P, r.P_class, r.R


def test_synonyms_of_one_class_are_two_hits_one_class() -> None:
    r = vocabulary_metrics(["man", "woman", "sky", "wall"], TOY, k=4)
    # hits: man, woman, wall = 3 of 4; classes {person, wall} = 2; |C| = 5
    assert scalars(r) == pytest.approx((75.0, 50.0, 40.0))
    assert r.num_classes == 5 and r.k == 4


def test_short_list_pads_with_misses() -> None:
    r = vocabulary_metrics(["wall", "sky"], TOY, k=4)
    assert scalars(r) == pytest.approx((25.0, 25.0, 20.0))
    assert list(r.ks) == [1, 2]  # the curve stops at the list's end


def test_empty_list() -> None:
    r = vocabulary_metrics([], TOY, k=10)
    assert (r.P, r.P_class, r.R, r.AUC) == (0.0, 0.0, 0.0, 0.0)
    assert len(r.ks) == len(r.precision) == len(r.recall) == 0


def test_label_matching_several_classes() -> None:
    full = vocabulary_metrics(["closet"], TOY, k=1)
    # one label = one precision hit; both classes found for recall; P_class is capped at P (not 200%)
    assert scalars(full) == pytest.approx((100.0, 100.0, 40.0))
    only_closet = vocabulary_metrics(["closet"], TOY, k=1, classes=[3])
    assert scalars(only_closet) == pytest.approx((100.0, 100.0, 100.0))
    elsewhere = vocabulary_metrics(["closet", "wall"], TOY, k=2, classes=[0, 1])
    assert scalars(elsewhere) == pytest.approx((50.0, 50.0, 50.0))


def test_real_ade847_closet() -> None:
    m = ClassMatcher.from_name("ade20k_847")
    r = vocabulary_metrics(["closet", "wardrobes", "sky"], m, k=3, classes=[46, 172, 2])
    # hits: closet (46, 172), wardrobe (46), sky (2) -> 3 labels, 3 distinct classes
    assert scalars(r) == pytest.approx((100.0, 100.0, 100.0))
    r = vocabulary_metrics(["closet"], m, k=1, classes=[172, 0])
    assert scalars(r) == pytest.approx((100.0, 100.0, 50.0))


def test_synset_entries() -> None:
    r = vocabulary_metrics([["man", "woman"], ["sky", "wall"], ["cloud"]], TOY, k=3)
    assert scalars(r) == pytest.approx((200 / 3, 200 / 3, 40.0))


def test_repeated_label_dropped_unless_asked() -> None:
    r = vocabulary_metrics(["wall", "Walls", "sky"], TOY, k=2)
    assert scalars(r) == pytest.approx((50.0, 50.0, 20.0))  # "Walls" dropped, "sky" moves up to rank 2
    r = vocabulary_metrics(["wall", "Walls", "sky"], TOY, k=2, dedupe=False)
    assert scalars(r) == pytest.approx((100.0, 50.0, 20.0))


def test_seen_vs_full_and_auc_by_hand() -> None:
    entries = ["wall", "sky", "man"]
    seen = vocabulary_metrics(entries, TOY, k=3, classes=[0, 1])
    # K=1: P 1, R 1/2;  K=2: P 1/2, R 1/2;  K=3: P 2/3, R 1.  Prefixed point (R 0, P 1).
    # AUC = 0.5*(1+1)/2 + 0*(1+1/2)/2 + 0.5*(1/2+2/3)/2 = 0.5 + 0 + 0.291666... = 0.791666...
    assert seen.AUC == pytest.approx(79.16666666666667)
    assert scalars(seen) == pytest.approx((200 / 3, 200 / 3, 100.0))
    full = vocabulary_metrics(entries, TOY, k=3)
    # recall 1/5, 1/5, 2/5: AUC = 0.2*1 + 0 + 0.2*(1/2+2/3)/2 = 0.316666...
    assert full.AUC == pytest.approx(31.666666666666668)
    assert scalars(full) == pytest.approx((200 / 3, 200 / 3, 40.0))


def test_max_k_cuts_the_curve_not_k() -> None:
    r = vocabulary_metrics(["sky", "wall", "man", "door"], TOY, k=4, max_k=2)
    assert list(r.ks) == [1, 2]
    assert scalars(r) == pytest.approx((75.0, 75.0, 60.0))
    # curve (R 0, P 0), (0, 0), (1/5, 1/2): AUC = 0.2 * (0 + 1/2) / 2 = 0.05
    assert r.AUC == pytest.approx(5.0)


def test_precision_divisor_k_or_min_k_len_by_hand() -> None:
    entries = ["wall", "sky", "man", "door", "tree", "Walls"]
    # distinct: wall, sky, man, door, tree ("Walls" repeats wall) -> #L = 5; hits wall, man, door = 3;
    # classes found wall, person, door = 3 of |C| = 5.
    # K = 8 > #L:  divisor K: P = 3/8 = 37.5 %;  divisor min(K, #L) = 5: P = 3/5 = 60 %;  R = 3/5 = 60 % either way
    by_k = vocabulary_metrics(entries, TOY, k=8)
    by_len = vocabulary_metrics(entries, TOY, k=8, precision_divisor="min_k_len")
    assert scalars(by_k) == pytest.approx((37.5, 37.5, 60.0))
    assert scalars(by_len) == pytest.approx((60.0, 60.0, 60.0))
    assert by_len.AUC == by_k.AUC and list(by_len.precision) == list(by_k.precision)  # the curve has K <= #L
    # K = 3 < #L: min(K, #L) = K, so both give P = hits among wall, sky, man = 2 / 3; R = {wall, person} = 2/5
    for divisor in ("k", "min_k_len"):
        r = vocabulary_metrics(entries, TOY, k=3, precision_divisor=divisor)
        assert scalars(r) == pytest.approx((200 / 3, 200 / 3, 40.0))
    # an empty list has nothing to divide: 0, not a division by zero
    assert vocabulary_metrics([], TOY, k=5, precision_divisor="min_k_len").P == 0.0
    with pytest.raises(ConfigError, match="precision_divisor must be one of k, min_k_len, got 'len'"):
        vocabulary_metrics(entries, TOY, k=3, precision_divisor="len")


def test_paper_a847_precision_needs_min_k_len() -> None:
    """P 37.81 with #L 321 at K = 1000 (the paper's A-847 rows): 321 labels reach at most 32.1 % divided by K."""
    m = ClassMatcher.from_name("ade20k_847")
    names = list(dict.fromkeys(c.name for c in m.classes))[:121] + [f"no class {i}" for i in range(200)]
    assert len(names) == 321  # 121 hits, #L 321
    assert vocabulary_metrics(names, m, k=1000).P == pytest.approx(12.1)  # 121 / 1000
    assert vocabulary_metrics(names, m, k=1000, precision_divisor="min_k_len").P == pytest.approx(100 * 121 / 321)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="k must be"):
        vocabulary_metrics(["wall"], TOY, k=0)
    with pytest.raises(ConfigError, match="not in the class list"):
        vocabulary_metrics(["wall"], TOY, k=1, classes=[0, 99])
    with pytest.raises(ConfigError, match="empty"):
        vocabulary_metrics(["wall"], TOY, k=1, classes=[])


def test_to_dict_leaves_curves_out() -> None:
    r = vocabulary_metrics(["wall", "sky"], TOY, k=2)
    assert set(r.to_dict()) == {"num_classes", "k", "P", "P_class", "R", "AUC"}
    assert r.to_dict(curves=True)["precision"] == [1.0, 0.5]


# ---- random lists vs a plain re-computation ----------------------------------------------------------------

WORDS = [f"w{i}" for i in range(14)]  # normalise to themselves; w10..w13 name no class


def reference(entries: list, classes: list[set[str]], c: set[int], k: int, max_k: int,
              divisor: str = "k") -> tuple:
    """Loops only: dedupe, then walk the list; P@K over K, or over min(K, #L)."""
    kept, keys = [], []
    for e in entries:
        key = e if isinstance(e, str) else tuple(sorted(set(e)))
        if key and key not in keys:
            keys.append(key)
            kept.append({e} if isinstance(e, str) else set(e))
    hits, found, curve = 0, set(), []
    p_at = pc_at = r_at = None
    for rank in range(1, max(k, max_k) + 1):
        if rank <= len(kept):
            ids = {i for i in c if classes[i] & kept[rank - 1]}
            hits += 1 if ids else 0
            found |= ids
            if rank <= max_k:
                curve.append((len(found) / len(c), hits / rank))
        if rank == k:
            d = k if divisor == "k" else min(k, len(kept))
            p_at, pc_at = (100 * hits / d, 100 * min(len(found), hits) / d) if d else (0.0, 0.0)
            r_at = 100 * len(found) / len(c)
    auc, prev = 0.0, (0.0, curve[0][1]) if curve else None
    for point in curve:
        auc += (point[0] - prev[0]) * (point[1] + prev[1]) / 2
        prev = point
    return p_at, pc_at, r_at, 100 * auc, curve


entry = st.one_of(st.sampled_from(WORDS), st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))


@settings(max_examples=300, deadline=None)
@given(synonyms=st.lists(st.sets(st.sampled_from(WORDS[:10]), min_size=1, max_size=3), min_size=1, max_size=6),
       entries=st.lists(entry, max_size=25), k=st.integers(1, 30), max_k=st.integers(1, 30), data=st.data())
def test_random_lists_match_plain_loops(synonyms, entries, k, max_k, data) -> None:
    matcher = ClassMatcher([ClassInfo(i, sorted(s)[0], tuple(sorted(s))) for i, s in enumerate(synonyms)])
    c = data.draw(st.sets(st.integers(0, len(synonyms) - 1), min_size=1))
    divisor = data.draw(st.sampled_from(["k", "min_k_len"]))
    r = vocabulary_metrics(entries, matcher, k=k, classes=c, max_k=max_k, precision_divisor=divisor)
    p, pc, rec, auc, curve = reference(entries, synonyms, c, k, max_k, divisor)
    assert (r.P, r.P_class, r.R, r.AUC) == pytest.approx((p, pc, rec, auc), abs=1e-9)
    assert [x for point in zip(r.recall, r.precision) for x in point] == pytest.approx(
        [x for point in curve for x in point])


# ---- evaluate_ranked and read_ranked -----------------------------------------------------------------------

def test_evaluate_ranked_report() -> None:
    entries = ["wall", "walls", "sky", "man", "people", "tree", "blue thing"]
    out = evaluate_ranked(entries, "ade20k_150", seen=[0, 12, 4])
    # distinct: wall, sky, man, person, tree, blue thing -> #L 6; no k given -> 150 for ade20k_150
    assert (out["k"], out["num_labels"], out["max_k"]) == (150, 6, 5000)
    assert out["num_labels_at_max_k"] == 6 and out["precision_divisor"] == "k"  # the defaults
    assert out["fp_in_vocab"] == 1  # "blue thing"
    # seen {wall 0, person 12, tree 4}: hits wall, man, person, tree = 4; classes 3
    assert out["seen"] == pytest.approx({"num_classes": 3, "P": 400 / 150, "P_class": 2.0, "R": 100.0,
                                         "AUC": out["seen"]["AUC"]})
    assert out["full"]["P"] == pytest.approx(500 / 150) and out["full"]["R"] == pytest.approx(400 / 150)
    assert "seen" not in evaluate_ranked(entries, "ade20k_150")
    assert evaluate_ranked(entries, "ade20k_847")["k"] == 1000
    assert evaluate_ranked(entries, "pascal_voc_21", k=5)["k"] == 5
    assert evaluate_ranked(entries, "pascal_voc_21")["k"] == len(ClassMatcher.from_name("pascal_voc_21"))


def test_label_count_at_max_k_and_divisor_in_the_report() -> None:
    entries = ["wall", "blue thing", "sky", "Walls", "thing two", "person"]
    # distinct: wall, blue thing, sky, thing two, person -> #L = 5, #L at K (max_k = 4) = min(5, 4) = 4;
    # K = 8: hits wall, sky, person = 3 -> P = 3/8 = 37.5 % (divisor K) or 3/min(8, 5) = 60 % (min_k_len);
    # seen {wall 0, sky 2, floor 3, person 12}: R = 3/4 = 75 %; FP in the top 4: blue thing, thing two = 2
    seen = [0, 2, 3, 12]
    out = evaluate_ranked(entries, "ade20k_150", k=8, seen=seen, max_k=4)
    assert (out["num_labels"], out["num_labels_at_max_k"], out["fp_in_vocab"]) == (5, 4, 2)
    assert out["precision_divisor"] == "k" and out["seen"]["P"] == pytest.approx(37.5)
    assert out["seen"]["R"] == pytest.approx(75.0)
    short = evaluate_ranked(entries, "ade20k_150", k=8, seen=seen, max_k=4, precision_divisor="min_k_len")
    assert short["precision_divisor"] == "min_k_len" and short["seen"]["P"] == pytest.approx(60.0)
    assert short["full"]["P"] == pytest.approx(60.0) and short["seen"]["R"] == pytest.approx(75.0)
    assert evaluate_ranked(entries, "ade20k_150", max_k=5000)["num_labels_at_max_k"] == 5  # #L < max_k


def test_run_settings_check_the_divisor() -> None:
    from llm2labels.settings import check_run_settings

    cfg = {"evaluation": {"precision_divisor": "min_k_len"}, "cache": {"dir": "/tmp/store"}}
    check_run_settings(cfg)
    with pytest.raises(ConfigError, match="evaluation.precision_divisor must be k or min_k_len .* got 'K'"):
        check_run_settings({**cfg, "evaluation": {"precision_divisor": "K"}})


def test_read_ranked_formats(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("rank,label,score,occ,prob,images,surface_forms\n2,sky,0.5,1,0.5,3,sky\n"
                   '1,"wall, brick",0.9,1,0.9,3,Wall|walls\n', encoding="utf-8")
    assert read_ranked(csv) == ["sky", "wall, brick"]  # file order
    txt = tmp_path / "list.txt"
    txt.write_text("wall\n\n  sky \n", encoding="utf-8")
    assert read_ranked(txt) == ["wall", "sky"]
    vocab = tmp_path / "vocabulary.json"
    vocab.write_text(json.dumps({"synsets": [{"name": "a", "members": ["a", "b"]}, {"name": "c",
                                 "members": ["c"]}], "hierarchy": []}), encoding="utf-8")
    assert read_ranked(vocab) == [["a", "b"], ["c"]]
    with pytest.raises(ConfigError, match="cannot read"):
        read_ranked(tmp_path / "missing.txt")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"lacks column\(s\) label"):
        read_ranked(tmp_path / "bad.csv")
