"""A seeded LLaVA-JSON set of a task the pool does not have, with noise planted by a faulty generator.

The toxic flags were built on the digit-arithmetic pool (`ost.data.pool`); this set checks them on a task
and a file format they were not built on. Flagging a record as toxic needs a proxy that can do the task,
hence two tasks. Both draw 56×56 images (the pool's size: 2×2 merged image tokens).
- `order` (the default): 3 handwritten digits in the pool's 2×2 grid, drawn exactly as the pool draws them
  (`ost.data.digits`, the `total` family's layout), so the proxy's vision base already reads them. The
  question asks for the digits from smallest to largest; the answer reads the digits, sorts them and ends
  "Answer: 257", as the pool writes it (a final may start with 0: read labels.csv as text). Digits are
  drawn independently, so about 28 % of scenes repeat one. Train images use the pool's handwriting,
  validation and test the handwriting of the pool's own val and test splits. Noise:
  `descending` (the sort is reversed: a consistent wrong rule), `dedup` (repeated digits are dropped;
  such records always have a repeat) and `shuffled_join` (below).
- `counts`: 2–9 circles, squares and triangles in 2–3 colours, one per 14-px patch of a 4×4 grid; the
  question asks how many shapes of one colour or one kind there are, the answer lists the groups and sums
  the asked ones. Kept, but the proxy cannot learn it at this size: 12 % validation exact match after the
  default 12-epoch warm-up. Noise: `counts_all` (the sum takes every group, not only the asked ones),
  `off_by_one` (a shape whose box touches the image edge is counted twice) and `shuffled_join`.
`shuffled_join` is the answer text of another record (a join off by some rows: image and text mismatch).
Every noisy record is wrong on its own image (a scene the bug gets right is redrawn). The labels go to
labels.csv, never into the JSON the method reads; validation and test are clean.

    python benchmarks/make_llava_set.py --out DIR [--task order --n-train 600 --noise-rate 0.25 --n-val 120
                                                   --n-test 200 --seed 0]
"""
import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ost.data import digits, tasks

SIDE, SLOT = 56, 14                      # the pool's image side; one patch per shape
GRID = SIDE // SLOT
COLOURS = {"red": (220, 30, 30), "green": (20, 160, 40), "blue": (30, 60, 220), "orange": (240, 140, 0)}
SHAPES = ("circle", "square", "triangle")
KINDS = {"order": ("descending", "dedup", "shuffled_join"),
         "counts": ("counts_all", "off_by_one", "shuffled_join")}
TASKS = tuple(KINDS)
QUESTIONS = {"colour": ("How many {} shapes are there?", "Count the {} shapes in the image.",
                        "How many of the shapes are {}?"),
             "kind": ("How many {}s are there?", "Count the {}s in the image.", "How many of the shapes are {}s?")}
ORDER_QUESTIONS = ("Write the digits in increasing order.", "List the digits from smallest to largest.",
                   "Put the digits shown in ascending order.", "Sort the digits in the image, smallest first.")
SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}
HANDWRITING = {"train": "pool", "val": "val", "test": "test"}   # the pool's disjoint handwriting sides
IMAGE_NAME = re.compile(r"(train|val|test)-\d{6}\.png")


def _counts_scene(rng, split) -> dict:
    """Shapes (colour, shape, x, y, size) on distinct slots, every chosen colour used, and one question."""
    n = int(rng.integers(2, 10))
    colours = [str(c) for c in rng.choice(list(COLOURS), size=min(n, int(rng.integers(2, 4))), replace=False)]
    painted = colours + [str(c) for c in rng.choice(colours, size=n - len(colours))]
    shapes = []
    for colour, slot in zip(rng.permutation(painted), rng.choice(GRID * GRID, size=n, replace=False)):
        size = int(rng.integers(9, 13))
        r, c = divmod(int(slot), GRID)
        dx, dy = (int(v) for v in rng.integers(0, SLOT - size + 1, size=2))
        shapes.append((str(colour), str(rng.choice(SHAPES)), c * SLOT + dx, r * SLOT + dy, size))
    qtype = str(rng.choice(list(QUESTIONS)))
    present = sorted({s[0] if qtype == "colour" else s[1] for s in shapes})
    target = str(rng.choice(present))
    return {"shapes": shapes, "qtype": qtype, "target": target,
            "question": str(rng.choice(QUESTIONS[qtype])).format(target)}


def _order_scene(rng, split) -> dict:
    """Three digits (repeats allowed), laid out and drawn as the pool's `total` family draws them."""
    ds = [int(d) for d in rng.integers(0, 10, size=3)]
    cells = tasks.FAMILIES["total"].layout(ds, rng)
    return {"digits": ds, "cells": cells, "image": digits.draw(cells, HANDWRITING[split], rng),
            "question": str(rng.choice(ORDER_QUESTIONS))}


def _draw(scene) -> Image.Image:
    if "image" in scene:
        return scene["image"]
    img = Image.new("RGB", (SIDE, SIDE), (255, 255, 255))
    pen = ImageDraw.Draw(img)
    for colour, shape, x, y, s in scene["shapes"]:
        box, fill = [x, y, x + s - 1, y + s - 1], COLOURS[colour]
        if shape == "circle":
            pen.ellipse(box, fill=fill)
        elif shape == "square":
            pen.rectangle(box, fill=fill)
        else:
            pen.polygon([(x, y + s - 1), (x + s - 1, y + s - 1), (x + (s - 1) / 2, y)], fill=fill)
    return img


def _touches(shape) -> bool:
    _, _, x, y, s = shape
    return min(x, y) == 0 or max(x, y) + s == SIDE


def _asked(scene, shape) -> bool:
    return shape[0 if scene["qtype"] == "colour" else 1] == scene["target"]


def solve_counts(scene, bug="clean") -> tuple:
    """(answer text, count) as a correct generator or a buggy one writes it."""
    groups = {}
    for sh in sorted(scene["shapes"], key=lambda s: (list(COLOURS).index(s[0]), SHAPES.index(s[1]))):
        groups[sh[:2]] = groups.get(sh[:2], 0) + (2 if bug == "off_by_one" and _touches(sh) else 1)
    listed = [f"{n} {c} {k}{'s' if n > 1 else ''}" for (c, k), n in groups.items()]
    listed = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
    terms = [n for (c, k), n in groups.items() if bug == "counts_all" or _asked(scene, (c, k))]
    count = sum(terms)
    label = f"the {scene['target']} ones" if scene["qtype"] == "colour" else f"the {scene['target']}s"
    line = " + ".join(map(str, terms)) + f" = {count}" if len(terms) > 1 else str(count)
    return f"The image shows {listed}. Counting {label}: {line}. Answer: {count}", count


def solve_order(scene, bug="clean") -> tuple:
    """(answer text, final) as a correct generator or a buggy one writes it; the reading is always right."""
    ds = scene["digits"]
    ordered = sorted(set(ds) if bug == "dedup" else ds, reverse=bug == "descending")
    final = "".join(map(str, ordered))
    return f"{tasks.reading(ds)} From smallest to largest: {', '.join(map(str, ordered))}. Answer: {final}", final


SCENE = {"counts": _counts_scene, "order": _order_scene}
SOLVE = {"counts": solve_counts, "order": solve_order}


def _records(task, split, n, noise_rate, seed) -> list:
    """Rows of one split: scene, answer, planted kind. A bug that is right on a scene gets a new scene."""
    rng = np.random.default_rng([seed, SPLIT_STREAM[split]])
    new_scene, solve = SCENE[task], SOLVE[task]
    kinds = ["clean"] * n
    if split == "train":
        for k, i in enumerate(rng.permutation(n)[:round(n * noise_rate)]):
            kinds[int(i)] = KINDS[task][k % len(KINDS[task])]
    rows = []
    for i, kind in enumerate(kinds):
        scene = new_scene(rng, split)
        while kind not in ("clean", "shuffled_join") and solve(scene, kind)[1] == solve(scene)[1]:
            scene = new_scene(rng, split)
        answer, stated = solve(scene, kind if kind != "shuffled_join" else "clean")
        rows.append({"id": f"{split}-{i:06d}", "split": split, "kind": kind, "scene": scene, "answer": answer,
                     "true": solve(scene)[1], "stated": stated, "source": ""})
    for i, row in enumerate(rows):           # a join off by some rows: the next clean answer that is wrong here
        if row["kind"] == "shuffled_join":
            for step in range(1, n):
                other = rows[(i + step) % n]
                if other["kind"] == "clean" and other["true"] != row["true"]:
                    row.update(answer=other["answer"], stated=other["true"], source=other["id"])
                    break
            else:
                raise ValueError(f"{split}: no clean record with another final to join to {row['id']}")
    return rows


def _llava(row) -> dict:
    return {"id": row["id"], "image": f"images/{row['id']}.png",
            "conversations": [{"from": "human", "value": "<image>\n" + row["scene"]["question"]},
                              {"from": "gpt", "value": row["answer"]}]}


def _label(row) -> dict:
    sc = row["scene"]
    head = {"id": row["id"], "split": row["split"], "kind": row["kind"]}
    if "digits" in sc:
        return {**head, "digits": "".join(map(str, sc["digits"])), "repeated": int(len(set(sc["digits"])) < 3),
                "cells": "".join("_" if d is None else str(d) for d in sc["cells"]),
                "true_final": row["true"], "stated_final": row["stated"], "answer_from": row["source"]}
    groups = {}
    for c, k, *_ in sc["shapes"]:
        groups[f"{c} {k}"] = groups.get(f"{c} {k}", 0) + 1
    return {**head, "question_type": sc["qtype"], "target": sc["target"], "true_count": row["true"],
            "stated_count": row["stated"], "n_shapes": len(sc["shapes"]),
            "edge_shapes": sum(map(_touches, sc["shapes"])),
            "shapes": ";".join(f"{g}:{n}" for g, n in sorted(groups.items())), "answer_from": row["source"]}


def make_set(out, n_train=600, noise_rate=0.25, n_val=120, n_test=200, seed=0, task="order") -> dict:
    """Write DIR/{train,val,test}.json, DIR/images/*.png and DIR/labels.csv; same seed, same bytes.

    labels.csv names the final `true_final`/`stated_final` for `order`, `true_count`/`stated_count` for `counts`."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    out = Path(out)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = {s: _records(task, s, n, noise_rate, seed)
            for s, n in (("train", n_train), ("val", n_val), ("test", n_test))}
    written = set()
    for split, split_rows in rows.items():
        for row in split_rows:
            name = f"{row['id']}.png"
            _draw(row["scene"]).save(images / name, format="PNG")
            written.add(name)
        text = json.dumps([_llava(r) for r in split_rows], indent=1, sort_keys=True, ensure_ascii=False)
        (out / f"{split}.json").write_text(text + "\n", encoding="utf-8")
    for stale in images.iterdir():           # images of an earlier, larger run of this script
        if IMAGE_NAME.fullmatch(stale.name) and stale.name not in written:
            stale.unlink()
    labels = [_label(r) for split_rows in rows.values() for r in split_rows]
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(labels[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(labels)
    kinds = {}
    for r in rows["train"]:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    return {"dir": out, "task": task, "labels": out / "labels.csv", "images": images,
            "kinds": dict(sorted(kinds.items())), **{split: out / f"{split}.json" for split in rows},
            "counts": {s: len(r) for s, r in rows.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder to write train/val/test.json, images/ and labels.csv")
    ap.add_argument("--task", choices=TASKS, default="order", help="digits in increasing order, or shape counts")
    ap.add_argument("--n-train", type=int, default=600)
    ap.add_argument("--noise-rate", type=float, default=0.25)
    ap.add_argument("--n-val", type=int, default=120)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    made = make_set(a.out, a.n_train, a.noise_rate, a.n_val, a.n_test, a.seed, task=a.task)
    print(f"{made['dir']} ({made['task']}): {made['counts']} records; train kinds {made['kinds']}")


if __name__ == "__main__":
    main()
