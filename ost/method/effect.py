"""One real step on one sample, and the validation loss before and after it: what the utility estimates.

The utility is a first-order estimate of a drop in the validation loss. A reader trusts it more after
seeing the thing itself: take the step the score simulates (same optimizer state, same normalisation), on a
single sample, evaluate the plain mean validation answer loss, and put the weights back.
"""
import pandas as pd
import torch

from ost.method import one_step
from ost.method.step import DEFAULT
from ost.models import collate, train


def validation_loss(model, tok, proc, validation, *, batch_size=32) -> float:
    """The plain mean answer loss over the validation samples, in eval mode."""
    col, mode = collate.Collator(tok, proc), model.training
    model.eval()
    try:
        with torch.no_grad():
            losses = [collate.per_sample_loss(model, b).double() for b in collate.batches(validation, col, batch_size)]
    finally:
        model.train(mode)
    return float(torch.cat(losses).mean())


def step_effect(model, tok, proc, samples, validation, *, step=DEFAULT, warm_state=None, batch_size=32) -> pd.DataFrame:
    """(index = sample id) `before`, `after` and `drop` of the plain mean validation loss when one real step of
    `step` is taken on each sample alone from the same weights (restored after each), plus the first-order
    `utility` the score reports for it. With `unit_val` the score weighs each validation sample to unit
    gradient, so `utility` and `drop` share their sign and ordering tendency, not their scale."""
    col = collate.Collator(tok, proc)
    before = validation_loss(model, tok, proc, validation, batch_size=batch_size)
    with train.frozen_vision(model):
        drop, utility = (one_step.utilities(model, collate.batches(samples, col, batch_size),
                                            collate.batches(validation, col, batch_size), collate.per_sample_loss,
                                            s, warm_state=warm_state).utility
                         for s in (step.with_(method="exact", unit_val=False), step.with_(method="first_order")))
    drop = drop.numpy()
    return pd.DataFrame({"before": before, "after": before - drop, "drop": drop, "utility": utility.numpy()},
                        index=list(samples["id"]))
