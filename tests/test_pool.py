import io
import re

import pytest

from ost.data import digits, pool, schema, tasks

SMALL = dict(n_groups=60, copies=3, n_val=12, n_test=12, n_cal=10, seed=7)


def _png(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def small():
    return schema.build_pool(**SMALL)


def _digits_in(answer):
    m = re.match(r"The digits are ([\d, and]+)\.", answer)
    return [int(d) for d in re.findall(r"\d", m.group(1))]


def test_same_seed_same_bytes(small):
    again = schema.build_pool(**SMALL)
    for split in schema.SPLITS:
        a, b = small[split], again[split]
        assert a["id"] == b["id"] and a["answer"] == b["answer"] and a["noise"] == b["noise"]
        assert [_png(x) for x in a["image"]] == [_png(x) for x in b["image"]]
    other = schema.build_pool(**{**SMALL, "seed": 8})
    assert other["pool"]["answer"] != small["pool"]["answer"]


def test_schema_and_splits(small):
    for split in schema.SPLITS:
        assert tuple(small[split].column_names) == schema.FIELDS
    ids = [i for s in schema.SPLITS for i in small[s]["id"]]
    assert len(ids) == len(set(ids))
    assert set(small["validation"]["noise"]) == set(small["test"]["noise"]) == {"clean"}
    assert small["pool"][0]["image"].size == (digits.SIDE, digits.SIDE)


def test_the_calibration_split_is_clean_items_asked_as_the_pools_are_and_changes_no_other_split(small):
    cal = small["calibration"]
    assert len(cal) == 10 and set(cal["noise"]) == {"clean"} and tuple(cal.column_names) == schema.FIELDS
    groups = cal["group"]
    assert [groups.count(g) for g in dict.fromkeys(groups)] == [3, 3, 3, 1]     # each item asked `copies` times
    for r in cal:
        assert (r["answer"], r["final"]) == tasks.solve(r["task"], _digits_in(r["answer"]))
    assert not set(groups) & set(small["pool"]["group"])
    assert len({_png(x) for x in cal["image"][:3]}) == 3            # one item, other handwriting each time
    without = schema.build_pool(**{**SMALL, "n_cal": 0})
    assert set(without) == set(schema.SPLITS)
    for split in schema.SPLITS:        # the other splits are drawn from their own streams
        assert without[split]["id"] == small[split]["id"] and without[split]["answer"] == small[split]["answer"]
    assert schema.pool_dir(schema.pool_params(n_cal=0)) != schema.pool_dir(schema.pool_params(n_cal=10))


def test_noise_rate_and_kinds():
    recs = pool.make_pool_records(n_groups=400, copies=5, noise_rate=0.35, seed=3)
    base = 400 * 5
    kinds = [r["noise"] for r in recs]
    toxic = sum(k in pool.TOXIC for k in kinds)
    assert abs(toxic / base - 0.35) < 0.02
    assert set(kinds) == set(pool.NOISE_KINDS)
    assert sum(k in pool.SYSTEMATIC for k in kinds) > sum(k in pool.RANDOM for k in kinds)
    assert sum(k == "duplicate" for k in kinds) == round(base * 0.05)
    clean_only = pool.make_pool_records(n_groups=50, copies=2, noise_rate=0.0, duplicate_rate=0.0)
    assert {r["noise"] for r in clean_only} == {"clean"}


def test_labels_tell_the_truth():
    """Clean answers are right; systematic ones follow their bug; random ones are broken as labelled."""
    recs = pool.make_pool_records(n_groups=300, copies=3, seed=4)
    by_id = {}
    for r in recs:
        kind = r["noise"]
        if kind in ("clean", "duplicate", "wrong_image"):
            assert (r["answer"], r["final"]) == tasks.solve(r["task"], _digits_in(r["answer"]))
        elif kind == "carry_dropped":
            ds = _digits_in(r["answer"])
            assert (r["answer"], r["final"]) == tasks.solve(r["task"], ds, "carry_dropped")
            assert tasks.bug_applies(r["task"], ds, "carry_dropped")
        elif kind == "digit_misread":
            assert "7" not in _digits_in(r["answer"])
        elif kind == "contradiction":
            computed = r["answer"].split("Answer:")[0].rsplit("=", 1)[1].strip(" .")
            assert computed != schema.extract_final(r["answer"]) == r["final"]
        elif kind in ("truncated", "boilerplate", "garbled"):
            assert schema.extract_final(r["answer"]) != r["final"]
        by_id.setdefault(r["group"], set()).add(r["task"])
    assert all(len(t) == 1 for t in by_id.values())      # a group is one item asked several times


def test_groups_are_redundant_and_systematic_noise_takes_whole_groups():
    recs = pool.make_pool_records(n_groups=200, copies=4, seed=5)
    groups = {}
    for r in recs:
        groups.setdefault(r["group"], []).append(r)
    sizes = [len(v) for v in groups.values()]
    assert min(sizes) >= 4
    for members in groups.values():
        kinds = {m["noise"] for m in members}
        if kinds & set(pool.SYSTEMATIC):
            assert kinds <= set(pool.SYSTEMATIC) | {"duplicate"}


def test_handwriting_split_is_disjoint():
    bank = digits.digit_bank(0)
    seen = {}
    for side, per_digit in bank.items():
        for d, imgs in per_digit.items():
            assert len(imgs) > 0
            for img in imgs:
                key = img.tobytes()
                assert seen.setdefault(key, side) == side, "a handwriting sample appears on two sides"


def test_save_and_load_round_trip(tmp_path):
    folder = schema.make_pool(out_dir=tmp_path / "p", **SMALL)
    loaded = schema.load_pool(folder)
    fresh = schema.build_pool(**SMALL)
    assert loaded["pool"]["id"] == fresh["pool"]["id"]
    assert _png(loaded["test"][0]["image"]) == _png(fresh["test"][0]["image"])
    with pytest.raises(FileNotFoundError, match="00_make_pool"):
        schema.load_pool(tmp_path / "missing")
    with pytest.raises(TypeError, match="unknown pool parameter"):
        schema.pool_params(n_gropus=3)


def test_base_records_are_clean_and_mixed():
    recs = pool.make_base_records(40)
    with_image = [r for r in recs if r["image"] is not None]
    assert 0 < len(with_image) < len(recs)
    for r in recs:
        if r["image"] is None:
            lhs, rhs = r["answer"].rstrip(".").split(" = ")
            assert int(eval(lhs)) == int(rhs) or "-" in lhs and abs(int(eval(lhs))) == int(rhs)


def test_extract_final():
    assert schema.extract_final("x. Answer: 12") == "12"
    assert schema.extract_final("Answer: 3. Answer: 12.") == "12"
    assert schema.extract_final("no final here") == ""
    assert schema.normalize_final(" 12. ") == "12"


def test_clean_part_drops_toxic_keeps_duplicates():
    from ost.experiments import regime
    ds = schema.to_dataset(pool.make_pool_records(n_groups=80, copies=3, seed=2))
    kept = regime.clean_part(ds)
    assert set(kept["noise"]) == {"clean", "duplicate"}
    assert len(kept) == sum(k not in pool.TOXIC for k in ds["noise"])


def test_held_out_kinds_only_when_asked_and_labelled_truthfully():
    plain = pool.make_pool_records(n_groups=200, copies=3, seed=9)
    extra = pool.make_pool_records(n_groups=200, copies=3, seed=9, extra_kinds=pool.HELD_OUT)
    assert not {r["noise"] for r in plain} & set(pool.HELD_OUT)
    assert set(pool.HELD_OUT) <= {r["noise"] for r in extra}
    assert sum(r["noise"] in pool.TOXIC for r in plain) == sum(r["noise"] in pool.TOXIC for r in extra)
    assert {r["group"] for r in plain} == {r["group"] for r in extra}     # same items, other corruptions
    clean_answer = {r["group"]: r["answer"] for r in extra if r["noise"] == "clean"}
    for r in extra:
        if r["noise"] == "operation_slip":     # the reading is right, the computation is not
            right = tasks.solve(r["task"], _digits_in(r["answer"]))
            assert r["final"] != right[1] and r["final"] == schema.extract_final(r["answer"])
        elif r["noise"] == "neighbour_answer":     # a correct answer, to another item
            right = tasks.solve(r["task"], _digits_in(r["answer"]))
            assert r["answer"] == right[0] and r["answer"] != clean_answer.get(r["group"], "")
    with pytest.raises(ValueError, match="extra_kinds"):
        pool.make_pool_records(n_groups=10, extra_kinds=("typo",))
