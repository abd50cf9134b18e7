import time

import pytest
import torch

from ost.models import collate, presets


@pytest.mark.parametrize("preset", ["proxy", "target"])
def test_presets_forward_backward(preset, tokenizer, processor, records):
    model = presets.build(preset, tokenizer)
    batch = collate.Collator(tokenizer, processor)(records[:4])
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0   # the image reaches the loss


def test_target_is_over_twice_the_proxy(tokenizer):
    ratio = presets.n_params(presets.build("target", tokenizer)) / presets.n_params(presets.build("proxy", tokenizer))
    assert ratio >= 2


def test_mrope_sections_fill_half_the_head(tokenizer):
    for preset in presets.PRESETS:
        cfg = presets.config_for(preset, tokenizer).text_config
        head = cfg.hidden_size // cfg.num_attention_heads
        assert sum(cfg.rope_parameters["mrope_section"]) == head // 2


def test_tokenizer_keeps_digits_and_special_tokens(tokenizer):
    ids = tokenizer("12 + 345", add_special_tokens=False)["input_ids"]
    pieces = [tokenizer.decode([i]).strip() for i in ids]
    assert [p for p in pieces if p.isdigit()] == list("12345")
    for t in presets.SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(t) is not None and tokenizer.tokenize(t) == [t]
    assert tokenizer.decode(ids) == "12 + 345"


def test_save_load_round_trip(tmp_path, tokenizer, processor, records):
    model = presets.build("proxy", tokenizer, seed=3).eval()
    folder = presets.save(tmp_path / "ckpt", model, tokenizer, processor)
    loaded, tok2, proc2 = presets.load(folder)
    batch = collate.Collator(tokenizer, processor)(records[:3])
    batch2 = collate.Collator(tok2, proc2)(records[:3])
    assert torch.equal(batch["input_ids"], batch2["input_ids"])
    assert torch.equal(batch["pixel_values"], batch2["pixel_values"])
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, loaded.eval()(**batch2).logits, atol=1e-6)
    assert tok2.chat_template == tokenizer.chat_template


def test_unknown_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(OSError) as err:
        presets.load("Qwen/Qwen2-VL-2B-Instruct-not-cached")
    assert "Qwen/Qwen2-VL-2B-Instruct-not-cached" in str(err.value)
    assert "HF_HUB_OFFLINE" in str(err.value)
    assert time.perf_counter() - start < 30


def test_missing_folder_and_preset_name_are_explained():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        presets.load("./no/such/folder")
    with pytest.raises(ValueError, match="load_base"):
        presets.load("proxy")
