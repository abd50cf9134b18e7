"""A seeded synthetic multimodal-math pool with planted, labelled noise, like a raw synthetic SFT set.

Redundant the way real pools are (MathV360K asks ~9 questions per image): each *group* is one
item (family + digits) asked `copies` times with other handwriting and other phrasing. Noise:
- systematic (whole groups from a faulty generator): `carry_dropped`, `digit_misread`;
- random (single samples): `wrong_answer`, `contradiction`, `wrong_image`, `garbled`, `truncated`,
  `boilerplate`;
- `duplicate`: an exact copy of another pool sample (wasteful, not toxic).
Two more random kinds stay out of the default pool, so a check can meet noise the step was never chosen
on (`extra_kinds`): `neighbour_answer` (a fluent answer copied from another record of the same family,
as a generator that joins records off by one writes it) and `operation_slip` (the rationale applies the
wrong operation or order, consistently: 7 - 5 for a sum, 3 - 8 = -5 for a difference, a + for a product).
Validation and test splits are clean, one sample per item, drawn from handwriting the pool never saw.
The calibration split is clean too, but drawn as the pool's clean samples are (pool handwriting, each item
asked `copies` times): the toxic flags' threshold holds only on a reference exchangeable with them.
"""
import numpy as np

from ost.data import digits as dg
from ost.data import tasks

GENERATOR_VERSION = 5   # part of every cache key: bump when the same parameters would give other samples
SYSTEMATIC = ("carry_dropped", "digit_misread")
RANDOM = ("wrong_answer", "contradiction", "wrong_image", "garbled", "truncated", "boilerplate")
HELD_OUT = ("neighbour_answer", "operation_slip")
TOXIC = SYSTEMATIC + RANDOM + HELD_OUT
NOISE_KINDS = ("clean", "duplicate") + SYSTEMATIC + RANDOM     # the kinds of a default pool
SLIP = {"sum": "-", "difference": "-", "product": "+", "total": "-"}
BOILERPLATE = ("I'm sorry, but I can't help with that request.",
               "As an AI language model, I cannot see images. Please describe it in words.",
               "Great question! Math is a wonderful subject to explore.")


def _item(family, digits, side, rng, gid, bug="clean"):
    answer, final = tasks.solve(family, digits, bug)
    return {"image": dg.draw(tasks.FAMILIES[family].layout(digits, rng), side, rng),
            "question": str(rng.choice(tasks.FAMILIES[family].questions)), "answer": answer,
            "final": final, "task": family, "difficulty": tasks.difficulty(family, digits),
            "noise": "clean" if bug == "clean" else bug, "group": gid, "_digits": digits}


def _corrupt(s, kind, rng, other):
    """Rewrite one clean sample in place into a random-noise sample of `kind`."""
    if kind == "wrong_answer":      # a consistent but wrong computation
        value = int(s["final"]) + int(rng.choice([-3, -2, -1, 1, 2, 3]))
        value = value if value >= 0 else int(s["final"]) + 2
        head = s["answer"].rsplit("=", 1)[0]
        s["answer"], s["final"] = f"{head}= {value}. Answer: {value}", str(value)
    elif kind == "contradiction":   # the rationale computes one thing, the final line says another
        value = int(s["final"]) + int(rng.choice([1, 2, 3]))
        s["answer"] = s["answer"].rsplit("Answer:", 1)[0] + f"Answer: {value}"
        s["final"] = str(value)
    elif kind == "wrong_image":     # the image belongs to another item
        s["image"] = other["image"]
    elif kind == "garbled":         # shuffled characters
        chars = list(s["answer"])
        rng.shuffle(chars)
        s["answer"] = "".join(chars)
    elif kind == "truncated":       # cut before the final answer
        s["answer"] = s["answer"][: int(rng.integers(8, s["answer"].index("Answer:")))].rstrip()
    elif kind == "boilerplate":     # off-task text
        s["answer"] = str(rng.choice(BOILERPLATE))
    elif kind == "neighbour_answer":    # a right-looking answer to another item of the same family
        s["answer"], s["final"] = other["answer"], other["final"]
    elif kind == "operation_slip":
        s["answer"], s["final"] = _slipped(s["task"], s["_digits"])
    s["noise"] = kind


def _slipped(family, digits):
    """(answer, final) with the wrong operation applied consistently; the reading stays right."""
    if family == "difference":      # smaller minus larger: a sign slip
        lo, hi = sorted(digits)
        line, value = f"{lo} - {hi} = {lo - hi}", lo - hi
    else:                           # the last step takes the slipped operator
        acc, steps = digits[0], []
        for k, d in enumerate(digits[1:]):
            op = SLIP[family] if k == len(digits) - 2 else "+"
            new = {"+": acc + d, "-": acc - d}[op]
            steps.append(f"{acc} {op} {d} = {new}")
            acc = new
        line, value = ". ".join(steps), acc
    return f"{tasks.reading(digits)} {line}. Answer: {value}", str(value)


def _pick_groups(groups, bug, budget, rng, taken):
    """Whole groups whose items the faulty generator gets wrong, until `budget` samples are used."""
    chosen, used = [], 0
    for g in rng.permutation(len(groups)):
        fam, ds, size = groups[g]
        if used >= budget:
            break
        if g not in taken and tasks.bug_applies(fam, ds, bug):
            chosen.append(int(g))
            taken.add(int(g))
            used += size
    return set(chosen)


def make_pool_records(n_groups=3000, copies=2, noise_rate=0.35, systematic_share=0.8,
                      carry_share=0.8, duplicate_rate=0.05, families=tuple(tasks.FAMILIES),
                      extra_kinds=(), seed=0) -> list:
    """The pool as a list of sample dicts (ids assigned, order shuffled). Same seed, same pool.

    extra_kinds (from HELD_OUT) join the random kinds and share their budget."""
    unknown = set(extra_kinds) - set(HELD_OUT)
    if unknown:
        raise ValueError(f"extra_kinds must come from {HELD_OUT}, not {sorted(unknown)}")
    kinds = RANDOM + tuple(extra_kinds)
    rng = np.random.default_rng(seed)
    fams = [str(f) for f in rng.choice(list(families), size=n_groups)]
    groups = [(f, tasks.sample_digits(f, rng), copies) for f in fams]
    n = n_groups * copies
    n_sys = round(n * noise_rate * systematic_share)
    taken = set()
    bugs = {g: "carry_dropped" for g in _pick_groups(groups, "carry_dropped", round(n_sys * carry_share), rng, taken)}
    n_carry = sum(copies for _ in bugs)
    bugs |= {g: "digit_misread" for g in _pick_groups(groups, "digit_misread", n_sys - n_carry, rng, taken)}
    records = [_item(f, ds, "pool", rng, f"g{g:05d}", bugs.get(g, "clean"))
               for g, (f, ds, size) in enumerate(groups) for _ in range(size)]

    clean = [i for i, r in enumerate(records) if r["noise"] == "clean"]
    n_random = max(0, round(n * noise_rate) - sum(r["noise"] != "clean" for r in records))
    picks = rng.permutation(clean)[:n_random]
    for k, i in enumerate(picks):
        kind = kinds[k % len(kinds)]
        if kind == "operation_slip" and _slipped(records[i]["task"], records[i]["_digits"])[1] == records[i]["final"]:
            kind = "wrong_answer"      # 5 - 5 = 0 either way: this item has no slip to make
        other = records[int(rng.integers(len(records)))]
        while other["_digits"] == records[i]["_digits"] or (
                kind == "neighbour_answer" and (other["task"] != records[i]["task"] or other["noise"] != "clean")):
            other = records[int(rng.integers(len(records)))]
        _corrupt(records[i], kind, rng, other)
    clean = [i for i, r in enumerate(records) if r["noise"] == "clean"]
    for i in rng.permutation(clean)[:round(n * duplicate_rate)]:
        records.append(dict(records[int(i)], noise="duplicate"))

    order = rng.permutation(len(records))
    out = []
    for k, i in enumerate(order):
        r = {key: v for key, v in records[int(i)].items() if key != "_digits"}
        out.append({"id": f"pool-{k:06d}", **r})
    return out


def make_clean_records(split, n, families=tuple(tasks.FAMILIES), seed=0) -> list:
    """Clean samples, one per item, drawn on the `val` or `test` side of the handwriting split."""
    rng = np.random.default_rng([seed, {"val": 1, "test": 2}[split]])
    out = []
    for k in range(n):
        fam = str(families[k % len(families)])
        r = _item(fam, tasks.sample_digits(fam, rng), split, rng, f"{split}-g{k:05d}")
        r.pop("_digits")
        out.append({"id": f"{split}-{k:06d}", **r})
    return out


def make_calibration_records(n, copies=2, families=tuple(tasks.FAMILIES), seed=0) -> list:
    """`n` clean samples made as the pool's clean ones are: pool-side handwriting, random families, each item
    asked `copies` times. Validation samples are not such a reference: held-out handwriting and one phrasing per
    item give them a higher loss than the pool's clean samples, and a threshold read from them flags too little."""
    rng = np.random.default_rng([seed, 4])
    fams = [str(f) for f in rng.choice(list(families), size=-(-n // copies))]
    items = [(f, tasks.sample_digits(f, rng)) for f in fams]
    records = [_item(f, ds, "pool", rng, f"cal-g{g:05d}") for g, (f, ds) in enumerate(items) for _ in range(copies)]
    return [{"id": f"cal-{k:06d}", **{key: v for key, v in r.items() if key != "_digits"}}
            for k, r in enumerate(records[:n])]


def make_base_records(n, seed=0) -> list:
    """Clean, cheap pretraining data: digit captions on pool-side images and text-only arithmetic.

    The analogue of a pretrained Qwen-VL base: it teaches perception and the arithmetic facts,
    not the task format, so SFT data still decides what the model does with them.
    """
    rng = np.random.default_rng([seed, 3])
    out = []
    for k in range(n):
        ds = [int(d) for d in rng.integers(0, 10, size=int(rng.integers(2, 5)))]
        base = {"id": f"base-{k:06d}", "final": "", "task": "base", "difficulty": 0,
                "noise": "clean", "group": f"base-{k:06d}"}
        if k % 2 == 0:
            cells = tasks.FAMILIES["total" if len(ds) > 2 else "sum"].layout(ds, rng)
            out.append({**base, "image": dg.draw(cells, "pool", rng), "question": "Which digits are shown?",
                        "answer": tasks.reading(ds)})
            continue
        op = ("sum", "difference", "product", "running")[(k // 2) % 4]
        if op == "running":      # the step of a running total: a partial sum plus one more digit
            ds, op = [int(rng.integers(0, 28)), ds[1]], "sum"
        line, _ = tasks.FAMILIES[op].compute(ds[:2])
        out.append({**base, "image": None, "question": f"What is {line.split(' =')[0]}?", "answer": f"{line}."})
    return out
