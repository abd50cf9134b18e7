"""The validation shift: how each pool sample's loss moves while a copy of the proxy learns the validation set."""
import numpy as np
import torch
from conftest import TINY

from ost.data import schema
from ost.method import shift
from ost.models import presets
from ost.runs.settings import SFT


def test_shift_rises_for_what_the_validation_set_teaches_and_leaves_the_model_alone(records, tokenizer, processor):
    """A pool copy of a validation sample gets easier as the copy learns it (shift > 0), and more than the same
    question with a wrong answer does; rows not `ok` are not run; the model handed in keeps its weights."""
    torch.manual_seed(0)
    model = presets.build(TINY, tokenizer, seed=0)
    val = records[:8]
    wrong = [dict(r, id=f"wrong-{i}", answer=r["answer"].replace(r["final"], str(int(r["final"]) + 3)))
             for i, r in enumerate(val[:4])]
    copies = [dict(r, id=f"copy-{i}") for i, r in enumerate(val[:4])]
    pool = schema.to_dataset(copies + wrong + [dict(records[20], id="skipped")])
    statuses = {r["id"]: "ok" for r in copies + wrong} | {"skipped": "skipped:too_long"}
    before = [p.detach().clone() for p in model.parameters()]
    regime = SFT(sft_epochs=8.0, sft_lr=5e-3, sft_batch_size=4)
    out = shift.validation_shift(model, tokenizer, processor, pool, schema.to_dataset(val), regime, statuses=statuses)
    assert out.index.tolist() == list(pool["id"]) and list(out.columns) == ["loss", "loss_after", "shift"]
    assert out.loc["skipped"].isna().all() and out.drop(index="skipped").notna().all().all()
    assert (out.loc[[f"copy-{i}" for i in range(4)], "shift"] > 0).all()
    assert out.loc[[f"copy-{i}" for i in range(4)], "shift"].mean() > out.loc[[f"wrong-{i}" for i in range(4)],
                                                                               "shift"].mean()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    again = shift.validation_shift(model, tokenizer, processor, pool, schema.to_dataset(val), regime, statuses=statuses)
    np.testing.assert_array_equal(again.to_numpy(), out.to_numpy())          # seeded: the same numbers
