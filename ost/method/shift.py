"""The validation shift: how each sample's loss moves while the warmed proxy learns the clean validation set.

One SGD step along the validation gradient changes sample i's loss by -η⟨g_i, ĝ_val⟩ at first order: the
paper's one-step utility, read from the pool's side. Taken to convergence (the warm-up's own schedule, on
the validation set), the same question — does learning clean data agree with this sample? — stops being
first order. That matters for the harm the utility misses: a sample that teaches a wrong rule also
teaches the format and the digit reading, so its one step still lowers the validation loss a little (its
utility stays above 0), but once the proxy has learned the right rule from clean data, its loss has risen.

shift_i = ℓ_i(θ_warm) - ℓ_i(θ_warm → fine-tuned on the validation set). Below 0: the sample contradicts the
validation data. It costs one short fine-tune on the validation set and two answer-loss passes over the pool
(forward only).

The fine-tune takes the target's SFT regime (`ost.runs.settings.SFT`: the learning rate and epochs
results/main/regime.json chose for learning this task), not the warm-up's longer, hotter schedule, under which
200 validation samples are memorised; the shift should measure what learning the clean data does to a sample.
On the main pool the two schedules gave subsets that trained alike within the seed spread
(docs/selection.md).
"""
import copy

import numpy as np
import pandas as pd

from ost.models import train
from ost.runs.settings import SFT


def validation_shift(model, tokenizer, processor, pool, validation, regime: SFT = SFT(), seed: int = 0,
                     statuses=None, progress: bool = False) -> pd.DataFrame:
    """(index = pool id) `loss` at the warmed proxy, `loss_after` once a copy of it has been fine-tuned on
    `validation` in `regime` (its epochs, lr and batch size; `seed` orders the batches), and `shift` = loss -
    loss_after. The model passed in is left as it was. With `statuses` (id → status, e.g. scores.parquet's),
    rows not `ok` get NaN and are not run: a record the scorer skipped is not scored here either."""
    ids = list(pool["id"])
    ok = np.ones(len(ids), dtype=bool) if statuses is None else (
        pd.Series(statuses).reindex(ids).to_numpy() == "ok")
    rows = pool.select(np.flatnonzero(ok).tolist())
    before = train.answer_losses(model, tokenizer, processor, rows).double().numpy()
    tuned = copy.deepcopy(model)
    train.sft(tuned, tokenizer, processor, validation, epochs=regime.sft_epochs, lr=regime.sft_lr,
              batch_size=regime.sft_batch_size, seed=seed, progress=progress)
    after = train.answer_losses(tuned, tokenizer, processor, rows).double().numpy()
    out = pd.DataFrame({"loss": np.nan, "loss_after": np.nan}, index=pd.Index(ids, name="id"))
    out.loc[out.index[ok], "loss"] = before
    out.loc[out.index[ok], "loss_after"] = after
    out["shift"] = out["loss"] - out["loss_after"]
    return out


def write(frame: pd.DataFrame, path) -> None:
    """shift.parquet: `validation_shift`'s frame, its ids a column (`read` gives them back as the index)."""
    frame.rename_axis("id").reset_index().to_parquet(path, index=False)


def read(path) -> pd.DataFrame:
    """shift.parquet as `validation_shift` returned it (index = id; loss, loss_after, shift)."""
    return pd.read_parquet(path).set_index("id")
