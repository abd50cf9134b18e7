import torch
from conftest import TINY
from PIL import Image

from ost.models import collate, presets


def _batch(tokenizer, processor, samples, **kw):
    return collate.Collator(tokenizer, processor, **kw)(samples)


def test_labels_cover_exactly_the_answer(tokenizer, processor, records):
    samples = records[:6]
    batch = _batch(tokenizer, processor, samples)
    for row, s in zip(range(len(samples)), samples):
        labels = batch["labels"][row]
        answer_ids = labels[labels != collate.IGNORE]
        assert tokenizer.decode(answer_ids) == s["answer"] + "<|im_end|>"
        # the answer is the tail of the real (unpadded) sequence
        n = int(batch["attention_mask"][row].sum())
        assert torch.equal(batch["input_ids"][row, n - len(answer_ids):n], answer_ids)


def test_image_tokens_match_the_grid(tokenizer, processor, records):
    batch = _batch(tokenizer, processor, records[:5])
    image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    per_row = (batch["input_ids"] == image_id).sum(1)
    expected = batch["image_grid_thw"].prod(-1) // processor.merge_size ** 2
    assert per_row.tolist() == expected.tolist() == [4] * 5
    assert torch.equal(batch["mm_token_type_ids"], (batch["input_ids"] == image_id).long())
    assert batch["pixel_values"].shape[0] == batch["image_grid_thw"].prod(-1).sum()


def test_mixed_lengths_text_only_and_padding_sides(tokenizer, processor, records):
    text_only = {"question": "What is 3 + 4?", "answer": "3 + 4 = 7.", "image": None}
    long = dict(records[0], question=records[0]["question"] + " Show every step carefully please.")
    samples = [text_only, long, records[1]]
    right = _batch(tokenizer, processor, samples)
    assert right["image_grid_thw"].shape[0] == 2                  # only the two images
    lengths = right["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == 3
    assert (right["input_ids"][right["attention_mask"] == 0] == tokenizer.pad_token_id).all()
    assert (right["labels"][right["attention_mask"] == 0] == collate.IGNORE).all()
    left = _batch(tokenizer, processor, samples, with_answer=False)
    assert "labels" not in left
    assert (left["attention_mask"][:, -1] == 1).all()              # prompts end together for generation
    prompt = tokenizer.decode(left["input_ids"][0][left["attention_mask"][0] == 1])
    assert prompt.endswith("<|im_start|>assistant\n") and "3 + 4 = 7" not in prompt


def test_real_qwen_image_processor_defaults(tokenizer, records):
    """Qwen2-VL's own processor settings (min 56², max 28²·1280 pixels): a 112×84 image → 4×3 tokens."""
    proc = presets.Qwen2VLImageProcessorPil()
    sample = dict(records[0], image=Image.new("RGB", (112, 84), "white"))
    batch = collate.Collator(tokenizer, proc)([sample, records[1]])
    image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (batch["input_ids"] == image_id).sum(1).tolist() == [12, 4]


def test_too_long_sample_is_named(tokenizer, processor, records):
    import pytest
    with pytest.raises(ValueError, match=records[0]["id"]):
        _batch(tokenizer, processor, records[:1], max_length=10)


def test_per_sample_loss_matches_model_loss(tokenizer, processor, records):
    model = presets.build("proxy", tokenizer).eval()
    batch = _batch(tokenizer, processor, records[:1])
    with torch.no_grad():
        assert torch.allclose(collate.per_sample_loss(model, batch)[0], model(**batch).loss, atol=1e-5)


def test_template_with_a_system_turn(tokenizer, processor, records):
    """A real Qwen instruct template adds a default system turn before the user's; the collator only
    asks the template for the prompt, so the image still expands and the labels still cover the answer."""
    import copy
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" + presets.CHAT_TEMPLATE)
    batch = collate.Collator(tok, processor)(records[:2])
    image_id = tok.convert_tokens_to_ids("<|image_pad|>")
    assert (batch["input_ids"] == image_id).sum(1).tolist() == [4, 4]
    text = tok.decode(batch["input_ids"][0])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.")
    answer = batch["labels"][0][batch["labels"][0] != collate.IGNORE]
    assert tok.decode(answer) == records[0]["answer"] + "<|im_end|>"


def test_samples_encoded_one_by_one_pad_to_the_same_batch(tokenizer, processor, records):
    """SFT encodes each sample once and pads cached rows: the batch must equal the batch collated whole,
    images of two sizes and a text-only sample included."""
    col = collate.Collator(tokenizer, processor)
    samples = [records[0], {"question": "What is 3 + 4?", "answer": "3 + 4 = 7.", "image": None},
               dict(records[1], image=records[1]["image"].resize((56, 84))), records[2]]
    whole = col(samples)
    cached = collate.EncodedDataset(samples, col)
    rows = [cached[i] for i in range(len(samples))]
    assert whole["image_grid_thw"].shape[0] == 3
    padded = col.pad(rows)
    assert padded.keys() == whole.keys()
    assert all(torch.equal(padded[k], whole[k]) for k in whole)
    assert cached[2] is rows[2]                                   # kept, not encoded again


def test_filled_in_chunks_the_rows_are_those_encoded_one_by_one(tokenizer, processor, records):
    """`fill` encodes many samples at once and runs the frozen tower once per chunk: the same ids and labels,
    and the tower's output for each image within float rounding of running it on that image alone."""
    col = collate.Collator(tokenizer, processor)
    tower = presets.build(TINY, tokenizer).model.visual
    samples = records[:5] + [{"question": "What is 3 + 4?", "answer": "3 + 4 = 7.", "image": None}]
    one = [collate.EncodedDataset(samples, col, vision=tower)[i] for i in range(len(samples))]
    many = collate.EncodedDataset(samples, col, vision=tower).fill(chunk=4).rows()
    for a, b in zip(one, many):
        assert a.keys() == b.keys() and a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]
        if "pixel_values" in a:
            assert a["pixel_values"].shape[1] == 32
            assert torch.allclose(a["pixel_values"], b["pixel_values"], atol=1e-5)


def test_encoded_dataset_keeps_no_more_than_its_byte_budget(tokenizer, processor, records):
    col = collate.Collator(tokenizer, processor)
    one = col.encode(records[:1])[0]["pixel_values"].nbytes
    cached = collate.EncodedDataset(records[:3], col, max_bytes=2 * one)
    rows = [cached[i] for i in range(3)]
    assert sorted(cached.cache) == [0, 1] and cached[2] is not rows[2]
    assert torch.equal(cached[2]["pixel_values"], rows[2]["pixel_values"])
