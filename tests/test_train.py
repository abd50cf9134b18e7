import json

import pytest
import torch
from conftest import TINY

from ost.data import schema
from ost.models import base, collate, presets, train
from ost.runs import paths


@pytest.fixture(scope="module")
def tiny_data(records):
    return schema.to_dataset(records[:24])


def test_sft_lowers_loss_and_is_seeded(tokenizer, processor, tiny_data):
    def run(seed):
        model = presets.build(TINY, tokenizer, seed=0)
        before = train.answer_losses(model, tokenizer, processor, tiny_data).mean()
        log = train.sft(model, tokenizer, processor, tiny_data, epochs=5, batch_size=8, grad_accum=2,
                        lr=1e-2, seed=seed, progress=False, logging_steps=1)
        after = train.answer_losses(model, tokenizer, processor, tiny_data).mean()
        return before, after, log, model
    before, after, log, model = run(0)
    assert after < before - 0.5
    assert log["steps"] == 10 and log["history"] and log["n_train"] == 24   # 24 / (8·2) → 2 steps an epoch
    assert all(p.requires_grad for p in model.parameters())            # frozen tower is unfrozen after
    _, after_again, _, _ = run(0)
    assert torch.allclose(after, after_again)                          # same seed, same model
    _, after_other, _, _ = run(1)
    assert not torch.allclose(after, after_other)


def test_sft_refuses_empty(tokenizer, processor, tiny_data):
    with pytest.raises(ValueError, match="empty"):
        train.sft(presets.build(TINY, tokenizer), tokenizer, processor, tiny_data.select([]), progress=False)


def test_frozen_vision_keeps_tower_and_trains_merger(tokenizer, processor, tiny_data):
    model = presets.build(TINY, tokenizer)
    tower = {n: p.clone() for n, p in model.model.visual.named_parameters()}
    train.sft(model, tokenizer, processor, tiny_data, epochs=1, batch_size=8, progress=False)
    for n, p in model.model.visual.named_parameters():
        assert torch.equal(p, tower[n]) != n.startswith("merger."), n


def test_evaluate_exact_match_on_known_answers(tokenizer, processor, records):
    """Overfit four samples, then exact match is 1 on them and 0 where the reference is altered."""
    one_per_task = list({r["task"]: r for r in records}.values())    # the question tells them apart
    ds = schema.to_dataset(one_per_task)
    model = presets.build(TINY, tokenizer, seed=0)
    train.sft(model, tokenizer, processor, ds, epochs=80, batch_size=4, lr=1e-2, warmup_ratio=0.0,
              freeze_vision=False, seed=0, progress=False)
    result = train.evaluate(model, tokenizer, processor, ds, batch_size=4)
    assert result["predictions"] == ds["answer"]
    assert result["accuracy"] == 1.0 and set(result["per_task"].values()) == {1.0}
    assert result["loss"] < 0.5
    altered = schema.to_dataset([dict(r, final=str(int(r["final"]) + 1)) if i == 0 else r
                               for i, r in enumerate(one_per_task)])
    assert train.evaluate(model, tokenizer, processor, altered, batch_size=4)["accuracy"] == 0.75


def test_base_stage_is_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DATA", tmp_path)
    monkeypatch.setitem(presets.PRESETS, "tiny", TINY)
    recipe = dict(vision_images=64, vision_epochs=1, n_samples=32, epochs=1, batch_size=16)
    model, tok, proc = base.load_base("tiny", progress=False, **recipe)
    folder = base.base_dir("tiny", **recipe)
    meta = json.loads((folder / "base.json").read_text())
    assert meta["recipe"]["n_samples"] == 32 and meta["steps"] == 2
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again, _, _ = base.load_base("tiny", progress=False, **recipe)            # second call: from the cache
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match="unknown base recipe"):
        base.load_base("tiny", n_sample=3)
    with pytest.raises(SystemExit, match="unknown preset.*'tiny-x'"):
        base.build_bases(["proxy", "tiny-x"])


def test_sft_returns_its_adam_state_in_model_order(tokenizer, processor, tiny_data):
    """Trainer groups parameters by weight decay; the returned state is re-keyed to model order so
    OST can continue the warmup optimizer's own step."""
    from ost.method import one_step
    from ost.models import collate
    model = presets.build(TINY, tokenizer)
    log = train.sft(model, tokenizer, processor, tiny_data, epochs=1, batch_size=8, progress=False)
    with train.frozen_vision(model):
        trained = [p for p in model.parameters() if p.requires_grad]
        state = log["adam_state"]
        assert len(state["param_groups"][0]["params"]) == len(trained)
        for i, p in enumerate(trained):
            assert state["state"][i]["exp_avg_sq"].shape == p.shape
        batch = collate.Collator(tokenizer, processor)(list(tiny_data.select(range(4))))
        u = one_step.one_step_utility(model, [batch], [batch], collate.per_sample_loss, lr=1e-4,
                                     optimizer="adam", adam_state=state)
    assert u.shape == (4,) and torch.isfinite(u).all()


def test_embeddings_one_vector_per_sample_independent_of_batching(tokenizer, processor, tiny_data):
    model = presets.build(TINY, tokenizer, seed=0)
    e = train.embeddings(model, tokenizer, processor, tiny_data, batch_size=24)
    assert e.shape == (24, TINY["hidden"]) and torch.isfinite(e).all()
    assert torch.allclose(e, train.embeddings(model, tokenizer, processor, tiny_data, batch_size=5), atol=1e-5)
    assert not torch.allclose(e[0], e[1])


def test_sft_on_cached_encodings_trains_the_same_model(tokenizer, processor, tiny_data, monkeypatch):
    """SFT pads samples encoded once (collate.EncodedDataset); batched as Trainer would batch the
    datasets.Dataset itself, sample order and weights come out the same to the bit."""
    def run():
        model = presets.build(TINY, tokenizer, seed=0)
        train.sft(model, tokenizer, processor, tiny_data, epochs=3, batch_size=8, lr=1e-2, seed=3, progress=False,
                  cache_vision=False)
        return model
    cached = run()
    pad = collate.Collator.pad
    monkeypatch.setattr(collate.Collator, "pad", lambda self, rows: pad(self, self.encode(rows)
                                                                       if "question" in rows[0] else rows))
    monkeypatch.setattr(train, "EncodedDataset", lambda dataset, collator, **kw: type("Raw", (), {
        "fill": lambda self: dataset})())
    plain = run()
    assert all(torch.equal(a, b) for a, b in zip(cached.parameters(), plain.parameters()))


def test_sft_on_rows_encoded_before_trains_the_same_model(tokenizer, processor, tiny_data):
    """A grid encodes its pool once (`train.encode`) and hands each run its rows: the same model to the bit
    as a run that encodes its own samples."""
    def run(encoded=None):
        model = presets.build(TINY, tokenizer, seed=0)
        train.sft(model, tokenizer, processor, tiny_data, epochs=2, batch_size=8, lr=1e-2, seed=3, progress=False,
                  encoded=encoded)
        return model
    rows = train.encode(presets.build(TINY, tokenizer, seed=0), tokenizer, processor, tiny_data)
    assert all(torch.equal(a, b) for a, b in zip(run().parameters(), run(rows).parameters()))
    with pytest.raises(ValueError, match="encoded rows"):
        run(rows[:-1])


def test_answer_only_loss_is_the_models_own_loss(tokenizer, processor, tiny_data):
    """AnswerLossTrainer projects only the positions that predict an answer token: the loss and gradient
    of the model's own loss over every position, which ignores the rest."""
    model = presets.build(TINY, tokenizer, seed=0)
    batch = collate.Collator(tokenizer, processor)(list(tiny_data.select(range(6))))
    n = (batch["labels"][:, 1:] != collate.IGNORE).sum()
    own = model(**batch, num_items_in_batch=n).loss
    own_grads = torch.autograd.grad(own, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    trainer = object.__new__(train.AnswerLossTrainer)
    mine = trainer.compute_loss(model, batch, num_items_in_batch=n)
    mine_grads = torch.autograd.grad(mine, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    assert torch.allclose(own, mine, rtol=1e-5)
    assert all((a is None and b is None) or torch.allclose(a, b, rtol=1e-4, atol=1e-7)
               for a, b in zip(own_grads, mine_grads))


def test_sft_from_cached_vision_features_trains_the_same_model(tokenizer, processor, tiny_data):
    """With the tower frozen, training the merger and decoder from each image's cached tower output gives
    the model that running the tower at every step gives, within float rounding; the tower is untouched."""
    def run(cache_vision):
        model = presets.build(TINY, tokenizer, seed=0)
        train.sft(model, tokenizer, processor, tiny_data, epochs=3, batch_size=8, lr=1e-2, seed=3, progress=False,
                  cache_vision=cache_vision)
        return model
    cached, plain, fresh = run(True), run(False), presets.build(TINY, tokenizer, seed=0)
    assert "forward" not in vars(cached.model.visual)          # the merger-only forward is gone after training
    for (name, a), b, c in zip(cached.named_parameters(), plain.parameters(), fresh.parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
        if ".visual." in f".{name}" and ".merger." not in name:
            assert torch.equal(a, c), name                     # frozen blocks never move
    assert any(not torch.equal(a, c) for (n, a), c in zip(cached.named_parameters(), fresh.parameters())
               if ".merger." in n)
    bitwise = all(torch.equal(a, b) for a, b in zip(cached.parameters(), plain.parameters()))
    print("bit-identical" if bitwise else "within rounding")


def test_mlp_on_real_tokens_only_changes_no_loss_and_no_gradient(tokenizer, processor, tiny_data):
    """Skipping the decoder MLP at padding positions (`train.real_tokens_only`) leaves the loss and every
    gradient as they were, and the model's own forward comes back afterwards."""
    model = presets.build(dict(TINY, layers=2), tokenizer, seed=0)
    batch = collate.Collator(tokenizer, processor)(list(tiny_data.select(range(8))))
    assert not batch["attention_mask"].bool().all()                 # the batch has padding to skip
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads():
        loss = model(**batch).loss
        return loss, torch.autograd.grad(loss, params, allow_unused=True)

    plain, plain_grads = loss_and_grads()
    rows = []
    hook = model.model.language_model.layers[0].mlp.gate_proj.register_forward_hook(
        lambda m, args, out: rows.append(args[0].shape[:-1].numel()))
    with train.real_tokens_only(model):
        real, real_grads = loss_and_grads()
    hook.remove()
    assert rows == [int(batch["attention_mask"].sum())]              # the MLP saw the real tokens alone
    assert torch.allclose(plain, real, rtol=1e-6)
    assert all((a is None and b is None) or torch.allclose(a, b, rtol=1e-4, atol=1e-7)
               for a, b in zip(plain_grads, real_grads))
    assert all("forward" not in vars(layer.mlp) for layer in model.model.language_model.layers)
