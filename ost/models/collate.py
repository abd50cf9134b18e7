"""Samples → Qwen2-VL inputs: chat template, image patches, image-pad expansion, answer-only labels.

The same calls work for the embedded tokenizer and a real Qwen tokenizer + image processor:
the prompt is the chat template's user turn (image + question) plus the assistant header; the
answer and the end-of-turn token are the only positions the loss sees.
"""
import torch

IGNORE = -100


class Collator:
    """Callable for a DataLoader or Trainer: list of sample dicts → batch of tensors.

    `with_answer=False` builds prompts only (left-padded) for generation.
    """

    def __init__(self, tokenizer, processor, with_answer: bool = True, padding_side: str | None = None,
                 max_length: int | None = None):
        self.tok, self.proc = tokenizer, processor
        self.with_answer = with_answer
        self.padding_side = padding_side or ("right" if with_answer else "left")
        self.max_length = max_length
        self.image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        end = "<|im_end|>"
        self.end_text = end if tokenizer.convert_tokens_to_ids(end) != tokenizer.unk_token_id else tokenizer.eos_token
        self.merge = getattr(processor, "merge_size", 2)

    def prompt_text(self, sample) -> str:
        content = [{"type": "text", "text": sample["question"]}]
        if sample.get("image") is not None:
            content.insert(0, {"type": "image"})
        messages = [{"role": "user", "content": content}]
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def n_tokens(self, sample) -> int:
        """Length of the sample's row in a batch, without processing its pixels: the image's token
        count follows from its size (what `ost.method.score`'s max_length policy compares)."""
        prompt = self._ids(self.prompt_text(sample))
        n = len(prompt)
        if sample.get("image") is not None:
            w, h = sample["image"].size
            n += self.proc.get_number_of_image_patches(h, w, {}) // self.merge**2 - 1
        return n + (len(self._ids(sample["answer"] + self.end_text)) if self.with_answer else 0)

    def _ids(self, text):
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def encode(self, samples) -> list:
        """Per-sample token ids, answer labels and image patches: the part of a batch that does not
        depend on its neighbours, so SFT can compute it once per sample instead of once per epoch."""
        images = [s["image"].convert("RGB") for s in samples if s.get("image") is not None]
        vision = self.proc(images=images, return_tensors="pt") if images else {}
        grids = vision["image_grid_thw"] if images else None
        counts = iter((grids.prod(-1) // self.merge**2).tolist() if images else [])
        out, image, first_patch = [], 0, 0
        for s in samples:
            prompt = []
            for t in self._ids(self.prompt_text(s)):   # one <|image_pad|> per image → its token count
                prompt.extend([t] * next(counts) if t == self.image_token_id else [t])
            answer = self._ids(s["answer"] + self.end_text) if self.with_answer else []
            ids = prompt + answer
            if self.max_length and len(ids) > self.max_length:
                raise ValueError(f"sample {s.get('id')!r} has {len(ids)} tokens, over max_length={self.max_length}")
            row = {"input_ids": ids, "labels": [IGNORE] * len(prompt) + answer}
            if s.get("image") is not None:
                n = int(grids[image].prod())
                row["pixel_values"] = vision["pixel_values"][first_patch:first_patch + n]
                row["image_grid_thw"] = grids[image:image + 1]
                image, first_patch = image + 1, first_patch + n
            out.append(row)
        return out

    def pad(self, rows) -> dict:
        """Encoded samples (`encode`) → one padded batch of tensors."""
        width = max(len(r["input_ids"]) for r in rows)
        batch = {"input_ids": self._pad([r["input_ids"] for r in rows], width, self.tok.pad_token_id),
                 "attention_mask": self._pad([[1] * len(r["input_ids"]) for r in rows], width, 0)}
        batch["mm_token_type_ids"] = (batch["input_ids"] == self.image_token_id).long() * batch["attention_mask"]
        if self.with_answer:
            batch["labels"] = self._pad([r["labels"] for r in rows], width, IGNORE)
        with_image = [r for r in rows if "pixel_values" in r]
        if with_image:
            batch["pixel_values"] = torch.cat([r["pixel_values"] for r in with_image])
            batch["image_grid_thw"] = torch.cat([r["image_grid_thw"] for r in with_image])
        return batch

    def __call__(self, samples) -> dict:
        return self.pad(self.encode(samples))

    def _pad(self, rows, width, value):
        def pad(r):
            fill = [value] * (width - len(r))
            return fill + r if self.padding_side == "left" else r + fill
        return torch.tensor([pad(r) for r in rows], dtype=torch.long)


class EncodedDataset(torch.utils.data.Dataset):
    """A dataset whose samples are decoded and encoded once and kept: an SFT run sees each sample once per
    epoch (a 20 % subset under fixed compute, ten times). Pair it with `collator.pad` as the batch collator;
    the batches are the same tensors as `collator`'s. Only the first `max_bytes` of image patches are kept,
    so a large real dataset encodes the rest anew. With `vision` (a model's vision tower, frozen), each
    image's patches are replaced by the tower's output before the merger, which never changes while the
    tower is frozen (`train.frozen_vision`). `rows` are samples encoded earlier (`rows()` of another
    EncodedDataset over the same samples and tower): a grid of runs encodes its pool once, not once per run."""

    def __init__(self, dataset, collator: Collator, max_bytes: int = 2 * 2**30, vision=None, rows=None):
        self.dataset, self.collator, self.vision = dataset, collator, vision
        if rows is not None and len(rows) != len(dataset):
            raise ValueError(f"{len(rows)} encoded rows for {len(dataset)} samples")
        self.cache, self.room = dict(enumerate(rows or ())), max_bytes

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if i in self.cache:
            return self.cache[i]
        row = self._encode([i])[0]
        self._keep(i, row)
        return row

    def fill(self, chunk: int = 256) -> "EncodedDataset":
        """Encode every sample not yet kept, `chunk` at a time with one tower call per chunk (per-image calls
        cost a tenth of a training step each), until the byte budget is spent; the rest stay lazy."""
        todo = [i for i in range(len(self)) if i not in self.cache]
        for start in range(0, len(todo), chunk):
            if self.room <= 0:
                break
            part = todo[start:start + chunk]
            for i, row in zip(part, self._encode(part)):
                self._keep(i, row)
        return self

    def rows(self) -> list:
        """Every sample's encoded row, in order (to hand to the next run over the same samples)."""
        return [self[i] for i in range(len(self))]

    def _encode(self, indices) -> list:
        rows = self.collator.encode([self.dataset[i] for i in indices])
        with_image = [r for r in rows if "pixel_values" in r]
        if self.vision is not None and with_image:    # the frozen tower's output stands in for pixels
            features = vision_features(self.vision, torch.cat([r["pixel_values"] for r in with_image]),
                                       torch.cat([r["image_grid_thw"] for r in with_image]))
            for r, f in zip(with_image, features.split([len(r["pixel_values"]) for r in with_image])):
                r["pixel_values"] = f
        return rows

    def _keep(self, i, row):
        size = row["pixel_values"].nbytes if "pixel_values" in row else 0
        if size <= self.room:
            self.cache[i], self.room = row, self.room - size


@torch.no_grad()
def vision_features(visual, pixel_values, grid_thw) -> torch.Tensor:
    """What a frozen vision tower hands its merger for these patches: (patches, embed_dim)."""
    forward = type(visual).forward    # the class's own: while training, the instance's runs only the merger
    return forward(visual, pixel_values.type(visual.dtype), grid_thw=grid_thw).last_hidden_state


def batches(dataset, collator, size: int) -> list:
    """A dataset as a list of collated batches of at most `size`, in order (for utility and scoring)."""
    return [collator(list(dataset.select(range(i, min(i + size, len(dataset))))))
            for i in range(0, len(dataset), size)]


def per_sample_loss(model, batch) -> torch.Tensor:
    """Mean cross-entropy over each sample's answer tokens, shape (B,): the loss OST differentiates. The batch
    goes to the model's device (a no-op on the CPU), so the collator's CPU tensors serve a model on a GPU."""
    device = getattr(model, "device", None)
    inputs = {k: v.to(device) if device is not None else v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits[:, :-1].float()
    target = batch["labels"][:, 1:].to(logits.device)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")
    mask = (target != IGNORE).float()
    return (nll * mask).sum(1) / mask.sum(1).clamp(min=1)
