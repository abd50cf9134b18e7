"""One real step on one sample: the validation loss before and after is what the exact utility measures, the weights
come back, and the first-order score it is shown beside is the one the run reports."""
import numpy as np
import torch
from conftest import TINY

from ost.data import schema
from ost.method import effect, score
from ost.method.step import DEFAULT
from ost.models import presets


def test_the_step_effect_is_the_exact_drop_of_the_plain_validation_loss(records, tokenizer, processor):
    torch.manual_seed(0)
    model = presets.build(TINY, tokenizer, seed=0)
    samples, val = schema.to_dataset(records[:3]), schema.to_dataset(records[10:18])
    step = DEFAULT.with_(optimizer="sgd", continue_warmup=False, lr=1e-2)
    weights = [p.detach().clone() for p in model.parameters()]
    out = effect.step_effect(model, tokenizer, processor, samples, val, step=step)
    assert out.index.tolist() == list(samples["id"]) and list(out.columns) == ["before", "after", "drop", "utility"]
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    before = effect.validation_loss(model, tokenizer, processor, val)
    assert np.allclose(out["before"], before) and np.allclose(out["after"], before - out["drop"])
    exact = score.score_samples(model, tokenizer, processor, samples, val,
                                step=step.with_(method="exact", unit_val=False))
    np.testing.assert_allclose(out["drop"].to_numpy(), exact.to_numpy(), rtol=1e-9)
    reported = score.score_samples(model, tokenizer, processor, samples, val, step=step)
    np.testing.assert_allclose(out["utility"].to_numpy(), reported.to_numpy(), rtol=1e-6)
