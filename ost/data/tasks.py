"""Four families of visual math over handwritten digits, with the faulty generators that break them.

Every answer is a short rationale plus a final line, "The digits are 7 and 5. 7 + 5 = 12. Answer: 12",
so a model has to read the image (perception) and then compute (arithmetic). The two systematic
bugs are the kind a faulty synthetic-data generator makes: they teach a wrong rule consistently,
which is what makes noisy data hurt (random noise barely did in the prototype).
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

MISREAD = {7: 1}    # the buggy reader always sees a 7 as a 1


@dataclass(frozen=True)
class Family:
    name: str
    questions: tuple                     # paraphrases; near-duplicates differ in phrasing
    n_digits: tuple                      # (min, max) digits in the image
    compute: Callable                    # digits → (expression line, final value)

    def layout(self, digits: list, rng: np.random.Generator) -> list:
        """Cells of the 2×2 grid in reading order; two-digit tasks use the top row."""
        if len(digits) == 2:
            return [digits[0], digits[1], None, None]
        cells = list(digits) + [None] * (4 - len(digits))
        blank = [i for i, d in enumerate(cells) if d is None]
        if blank:   # the empty cell may be anywhere; reading order is kept
            cells = [d for d in cells if d is not None]
            cells.insert(int(rng.integers(4)), None)
        return cells


def _keep(value, drop_carry):
    return value % 10 if drop_carry else value


def _sum(ds, drop_carry=False):
    value = _keep(ds[0] + ds[1], drop_carry)
    return f"{ds[0]} + {ds[1]} = {value}", value


def _difference(ds, drop_carry=False):
    hi, lo = max(ds), min(ds)
    return f"{hi} - {lo} = {hi - lo}", hi - lo


def _product(ds, drop_carry=False):
    value = _keep(ds[0] * ds[1], drop_carry)
    return f"{ds[0]} * {ds[1]} = {value}", value


def _total(ds, drop_carry=False):
    """A running sum, one addition per step, as a careful rationale (and a tiny model) does it."""
    steps, acc = [], ds[0]
    for d in ds[1:]:
        new = _keep(acc + d, drop_carry)
        steps.append(f"{acc} + {d} = {new}")
        acc = new
    return ". ".join(steps), acc


FAMILIES = {
    "sum": Family("sum", ("What is the sum of the two digits?", "Add the two digits shown.",
                          "What do the two digits add up to?"), (2, 2), _sum),
    "difference": Family("difference", ("What is the larger digit minus the smaller one?",
                                        "Subtract the smaller digit from the larger one.",
                                        "How far apart are the two digits?"), (2, 2), _difference),
    "product": Family("product", ("What is the product of the two digits?", "Multiply the two digits shown.",
                                  "What do you get when you multiply the two digits?"), (2, 2), _product),
    "total": Family("total", ("What is the total of all the digits shown?", "Add up every digit in the image.",
                              "What do all the digits sum to?"), (3, 3), _total),
}


def reading(digits) -> str:
    ds = [str(d) for d in digits]
    listed = ds[0] if len(ds) == 1 else ", ".join(ds[:-1]) + " and " + ds[-1]
    return f"The digits are {listed}."


def solve(family: str, digits, bug: str = "clean") -> tuple[str, str]:
    """(answer text, final) for `digits`, as a correct generator or a buggy one writes it."""
    seen = [MISREAD.get(d, d) for d in digits] if bug == "digit_misread" else list(digits)
    # carry_dropped: every addition or product that reaches 10 keeps only its units digit
    line, value = FAMILIES[family].compute(seen, drop_carry=bug == "carry_dropped")
    return f"{reading(seen)} {line}. Answer: {value}", str(value)


def bug_applies(family: str, digits, bug: str) -> bool:
    """Whether the faulty generator's answer differs from the correct one on this item."""
    return solve(family, digits, bug) != solve(family, digits)


def sample_digits(family: str, rng: np.random.Generator) -> list:
    lo, hi = FAMILIES[family].n_digits
    return [int(d) for d in rng.integers(0, 10, size=int(rng.integers(lo, hi + 1)))]


def difficulty(family: str, digits) -> int:
    """1 = one small step; +1 per extra digit; +1 when the result needs a carry (≥ 10)."""
    _, value = FAMILIES[family].compute(list(digits))
    return 1 + (len(digits) - 2) + int(value >= 10)
