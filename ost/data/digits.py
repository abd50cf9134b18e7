"""Real handwritten digits drawn onto a grid a tiny vision tower can read.

With 14-px patches merged 2×2, one 28×28 cell is exactly one image token; each digit fills one
cell, so perception is learnable from scratch (small scattered objects were not: docs/design.md).
The scikit-learn digits are split by image so that no handwriting sample is shared between sides.
"""
from functools import lru_cache

import numpy as np
from PIL import Image

CELL = 28                      # one merged image token
GRID = 2                       # 2×2 cells → a 56×56 image → 4 image tokens
SIDE = CELL * GRID
SPLITS = {"pool": 0.7, "val": 0.1, "test": 0.2}   # share of the 1,797 digit images per side


@lru_cache(maxsize=None)
def digit_bank(seed: int = 0) -> dict:
    """{side: {digit: array of 8×8 images}}, a seeded disjoint split of the bundled digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.random.default_rng(seed).permutation(len(bunch.target))
    bounds = np.cumsum([0] + [round(f * len(order)) for f in SPLITS.values()])
    bounds[-1] = len(order)
    bank = {}
    for k, side in enumerate(SPLITS):
        idx = order[bounds[k]:bounds[k + 1]]
        bank[side] = {d: bunch.images[idx[bunch.target[idx] == d]] for d in range(10)}
    return bank


def _glyph(img8: np.ndarray, size: int) -> Image.Image:
    """8×8 scikit-learn digit (0..16, ink high) → dark ink on white, size×size."""
    ink = (img8 / 16.0 * 255).astype(np.uint8)
    return Image.fromarray(255 - ink, mode="L").resize((size, size), Image.BILINEAR)


def draw(cells: list, side: str, rng: np.random.Generator, bank_seed: int = 0) -> Image.Image:
    """Render up to GRID² digits (None = empty cell), row by row, each with random handwriting."""
    bank = digit_bank(bank_seed)[side]
    canvas = Image.new("L", (SIDE, SIDE), 255)
    for pos, digit in enumerate(cells):
        if digit is None:
            continue
        samples = bank[int(digit)]
        glyph = _glyph(samples[rng.integers(len(samples))], size=int(rng.integers(20, 25)))
        r, c = divmod(pos, GRID)
        off = CELL - glyph.size[0]
        dx, dy = (int(v) for v in rng.integers(0, off + 1, size=2))
        canvas.paste(glyph, (c * CELL + dx, r * CELL + dy))
    return canvas.convert("RGB")
