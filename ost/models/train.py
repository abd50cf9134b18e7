"""Supervised fine-tuning with `transformers.Trainer`, and evaluation by greedy decoding.

Trainer keeps the loop standard: on a GPU machine the same call runs under accelerate/torchrun.
Accuracy is exact match of the final answer (the text after "Answer:") on a clean split.
"""
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ost.data.answers import find_final
from ost.data.schema import normalize_final
from ost.models.collate import IGNORE, Collator, EncodedDataset, per_sample_loss
from ost.runs.workers import bar, show_progress


class _History(TrainerCallback):
    def __init__(self):
        self.rows = []

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.rows.append({"step": state.global_step, "epoch": state.epoch, "loss": float(logs["loss"])})


class AnswerLossTrainer(Trainer):
    """Trainer whose loss projects onto the vocabulary only the positions that predict an answer token.

    The model's own loss builds logits at every position, prompt and padding included, and the loss then
    ignores all but the answer's (about a third here): the same sum over the same terms, divided by the same
    count of answer tokens (`num_items_in_batch`), without the wasted projection and log-softmax.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        target = F.pad(inputs.pop("labels"), (0, 1), value=IGNORE)[:, 1:]     # position t predicts token t + 1
        keep = target != IGNORE
        outputs = model(**inputs, logits_to_keep=keep)                        # logits of the kept positions only
        loss = F.cross_entropy(outputs.logits.float(), target[keep], reduction="sum")
        loss = loss / (num_items_in_batch if num_items_in_batch is not None else keep.sum()).to(loss.device)
        return (loss, outputs) if return_outputs else loss


@contextmanager
def frozen_vision(model, enabled: bool = True, cached: bool = False):
    """Freeze the vision tower except its merger (the projector into the decoder) for a while.

    Qwen-VL fine-tuning recipes commonly keep the ViT frozen; here it also keeps the perception the
    base stage paid for from being washed out by a high SFT learning rate. With `cached`, the tower's
    forward runs only the merger: its input is then the frozen blocks' output for each image, computed
    once (`collate.vision_features`) instead of at every step.
    """
    visual = vision_tower(model)
    params = [p for n, p in visual.named_parameters() if not n.startswith("merger.") and p.requires_grad] \
        if enabled and visual is not None else []
    for p in params:
        p.requires_grad_(False)
    if enabled and cached and visual is not None:
        visual.forward = lambda hidden_states, grid_thw=None, **kw: BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=visual.merger(hidden_states))
    try:
        yield
    finally:
        if visual is not None:
            visual.__dict__.pop("forward", None)
        for p in params:
            p.requires_grad_(True)


@contextmanager
def real_tokens_only(model, enabled: bool = True):
    """Run each decoder layer's MLP on the batch's real tokens only, for a while.

    A batch is padded to its longest sample (a fifth of its tokens here are padding), and the MLP is most of a
    layer's matrix work. A padding position is never attended to (it comes after every real token, and the
    mask hides it) and carries no label, so what the MLP computes there reaches nothing: skipping it leaves
    every real token's output, the loss and the gradient as they were (within float rounding)."""
    text = getattr(getattr(model, "model", model), "language_model", None)
    layers = [layer for layer in getattr(text, "layers", []) if hasattr(layer, "mlp")] if enabled else []
    mask = {}

    def remember(module, args, kwargs):
        mask["real"] = kwargs.get("attention_mask")

    def on_real(mlp, x):
        real = mask.get("real")
        if real is None or real.dim() != 2 or real.shape != x.shape[:2] or bool(real.all()):
            return type(mlp).forward(mlp, x)
        real = real.bool()
        out = x.new_zeros(x.shape)
        out[real] = type(mlp).forward(mlp, x[real])
        return out

    hook = text.register_forward_pre_hook(remember, with_kwargs=True) if layers else None
    for layer in layers:
        layer.mlp.forward = lambda x, mlp=layer.mlp: on_real(mlp, x)
    try:
        yield
    finally:
        if hook is not None:
            hook.remove()
        for layer in layers:
            vars(layer.mlp).pop("forward", None)


def vision_tower(model):
    return getattr(getattr(model, "model", model), "visual", None)


@contextmanager
def tower_running(model):
    """The vision tower's own forward for a while: to evaluate mid-run on images while SFT feeds it cached
    features (`frozen_vision(cached=True)`)."""
    visual = vision_tower(model)
    patched = vars(visual).pop("forward", None) if visual is not None else None
    try:
        yield
    finally:
        if patched is not None:
            visual.forward = patched


def sft(model, tokenizer, processor, dataset, *, epochs: float = 3, batch_size: int = 32, grad_accum: int = 1,
        lr: float = 1e-3, max_steps: int = -1, warmup_ratio: float = 0.05, weight_decay: float = 0.0,
        seed: int = 0, freeze_vision: bool = True, cache_vision: bool = True, progress: bool = True,
        group_by_length: bool = False, logging_steps: int = 10, callbacks=(), encoded=None,
        optim: str = "adamw_torch_fused", answer_loss: bool = True, real_tokens: bool = True) -> dict:
    """Fine-tune `model` in place on `dataset` (the sample schema); returns loss history and cost.

    `max_steps` > 0 overrides `epochs` (the fixed-compute protocol gives every subset the same steps).
    With the tower frozen, `cache_vision` computes each image's tower output once and trains only what
    is trainable (merger + decoder) from it: the same model within float rounding. For the embedded presets
    the tower is a few percent of a step (the decoder dominates); for a real ViT it is most of the forward.
    `group_by_length` batches samples of similar length (Trainer's LengthGroupedSampler): the step cost is
    its tokens, padding included, so less padding is a cheaper step; the order is still seeded and shuffled.
    `callbacks` are extra `TrainerCallback`s (e.g. `ost.experiments.regime`'s evaluation at chosen epochs).
    `encoded` are the samples already encoded for this model (`encode`), in `dataset`'s order: a grid of runs
    over one pool encodes it once. With `answer_loss` the loss projects only answer positions
    (`AnswerLossTrainer`); `optim` is Trainer's name of the AdamW kernel (the fused one: the same update as the
    per-parameter loop, in fewer passes); with `real_tokens` the decoder's MLP skips padding (`real_tokens_only`).
    Each leaves the training as it was, within float rounding; what each saves: `make bench-sft`.
    `progress` draws Trainer's bar and prints its logs on the command line; inside a notebook neither shows
    (`ost.runs.workers.show_progress`), nor does Trainer's notebook table of the losses.
    """
    if len(dataset) == 0:
        raise ValueError("cannot fine-tune on an empty dataset")
    progress = show_progress(progress)     # with disable_tqdm Trainer adds neither its bar nor its notebook table
    history = _History()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, num_train_epochs=epochs, max_steps=max_steps, per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=grad_accum, learning_rate=lr, lr_scheduler_type="cosine",
            warmup_steps=warmup_ratio, weight_decay=weight_decay, seed=seed, data_seed=seed,
            logging_steps=logging_steps, save_strategy="no", report_to="none", remove_unused_columns=False,
            disable_tqdm=not progress, dataloader_num_workers=0, dataloader_pin_memory=False,
            optim=optim, train_sampling_strategy="group_by_length" if group_by_length else "random")
        collator = Collator(tokenizer, processor)
        cached = _tower_to_cache(model, freeze_vision, cache_vision)
        rows = EncodedDataset(dataset, collator, vision=cached, rows=encoded).fill()
        trainer = (AnswerLossTrainer if answer_loss else Trainer)(
            model=model, args=args, train_dataset=rows, data_collator=collator.pad, callbacks=[history, *callbacks])
        if not progress:
            trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        with frozen_vision(model, freeze_vision, cached is not None), real_tokens_only(model, real_tokens):
            out = trainer.train()
        seconds = time.perf_counter() - start
        adam_state = _adam_state_in_model_order(model, trainer.optimizer)
    model.eval()
    return {"history": history.rows, "train_seconds": seconds, "steps": out.global_step,
            "train_loss": out.training_loss, "n_train": len(dataset), "seed": seed, "adam_state": adam_state}


def encode(model, tokenizer, processor, dataset, freeze_vision: bool = True, cache_vision: bool = True) -> list:
    """`dataset` encoded once for `sft` on this model (its `encoded`): token ids, answer labels and, with the
    tower frozen and cached, each image's tower output. Pass a run the rows of its samples, in its order."""
    return EncodedDataset(dataset, Collator(tokenizer, processor), max_bytes=2**62,
                          vision=_tower_to_cache(model, freeze_vision, cache_vision)).fill().rows()


def _tower_to_cache(model, freeze_vision: bool, cache_vision: bool):
    """The vision tower whose output SFT computes once per image (frozen and cached), or None."""
    return vision_tower(model) if freeze_vision and cache_vision else None


def _adam_state_in_model_order(model, optimizer) -> dict:
    """The optimizer's state as a torch.optim.Adam state_dict over the parameters it trained, in
    `model.parameters()` order (Trainer groups them by weight decay, which reorders them), so OST can
    take "the warmup optimizer's own next step" (`ost.method.one_step`, optimizer="adam")."""
    trained = {id(p): (g, optimizer.state.get(p, {})) for g in optimizer.param_groups for p in g["params"]}
    params = [p for p in model.parameters() if id(p) in trained]
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    return {"state": {i: {k: (v.detach() if torch.is_tensor(v) else v)     # the optimizer is discarded: no copy
                          for k, v in trained[id(p)][1].items()} for i, p in enumerate(params)},
            "param_groups": [{**group, "params": list(range(len(params)))}]}


def _batches(dataset, batch_size):
    for i in range(0, len(dataset), batch_size):
        yield dataset.select(range(i, min(i + batch_size, len(dataset))))


@torch.no_grad()
def answer_losses(model, tokenizer, processor, dataset, batch_size: int = 64) -> torch.Tensor:
    """Per-sample mean answer loss over a dataset, in order."""
    was_training = model.training
    model.eval()
    collate = Collator(tokenizer, processor)
    out = torch.cat([per_sample_loss(model, collate(list(b))) for b in _batches(dataset, batch_size)])
    model.train(was_training)
    return out


@torch.no_grad()
def embeddings(model, tokenizer, processor, dataset, batch_size: int = 64) -> torch.Tensor:
    """One vector per sample, (N, hidden): the proxy's last hidden state averaged over the sample's
    tokens (image, question and answer). Clusters of these are the regions coverage quotas protect."""
    was_training = model.training
    model.eval()
    collate, out = Collator(tokenizer, processor), []
    for b in _batches(dataset, batch_size):
        inputs = {k: v for k, v in collate(list(b)).items() if k != "labels"}
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1].float()
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.config.text_config.hidden_size)


@torch.no_grad()
def generate(model, tokenizer, processor, dataset, batch_size: int = 64, max_new_tokens: int = 64,
             progress: bool = False) -> list:
    """Greedy completions of each sample's prompt, in order."""
    was_training = model.training
    model.eval()
    collate = Collator(tokenizer, processor, with_answer=False)
    texts = []
    for batch in bar(list(_batches(dataset, batch_size)), desc="generate", progress=progress):
        inputs = collate(list(batch))
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        texts += tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    model.train(was_training)
    return texts


def evaluate(model, tokenizer, processor, dataset, batch_size: int = 64, max_new_tokens: int = 64,
             progress: bool = False, extract=find_final) -> dict:
    """Exact match of the final answer, overall and per task family, plus the mean answer loss.
    `extract` reads the final out of a completion: `ost.data.answers.find_final` (the pool's `Answer:` line,
    "The answer is", \\boxed, ####, a choice letter, a bare short answer), the loaders' rule too."""
    preds = generate(model, tokenizer, processor, dataset, batch_size, max_new_tokens, progress)
    hits = defaultdict(list)
    for pred, final, task in zip(preds, dataset["final"], dataset["task"]):
        hit = normalize_final(extract(pred)) == normalize_final(final)
        hits[task].append(hit)
        hits["all"].append(hit)
    losses = answer_losses(model, tokenizer, processor, dataset, batch_size)
    return {"accuracy": sum(hits["all"]) / len(hits["all"]),
            "per_task": {t: sum(h) / len(h) for t, h in sorted(hits.items()) if t != "all"},
            "loss": float(losses.mean()), "n": len(preds), "predictions": preds}
