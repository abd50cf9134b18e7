"""Tiny Qwen2-VL models built from a config, a BPE tokenizer trained here, and `load()` for real ones.

The presets are the real Qwen2-VL architecture (vision tower with 14-px patches merged 2×2, M-RoPE
text decoder), only small: the proxy is what OST warms up and scores with, the target is the
model the selected subsets fine-tune. The same `load()` takes a Qwen2-VL / Qwen2.5-VL checkpoint
id or folder instead.
"""
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForImageTextToText,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)

# Text decoder and vision tower sizes. rope_theta is small on purpose: M-RoPE gives an image token's
# row and column the *lowest* rotary frequencies, which at Qwen's 1e6 (or 1e4) barely turn between
# neighbouring cells of a 2×2 grid, and the tiny decoder then cannot tell left from right.
PRESETS = {
    "proxy-small": dict(hidden=32, layers=2, heads=2, vision_width=64, vision_depth=2, vision_heads=4,
                        rope_theta=10.0),
    "proxy": dict(hidden=64, layers=2, heads=2, vision_width=64, vision_depth=2, vision_heads=4, rope_theta=10.0),
    "target": dict(hidden=96, layers=3, heads=4, vision_width=96, vision_depth=2, vision_heads=4, rope_theta=10.0),
}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = (   # Qwen's chat layout without the default system prompt (short sequences matter here)
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
IMAGE_SIDE = 56      # the pool's images: 2×2 merged tokens


def train_tokenizer(texts, vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """Byte-level BPE on the pool's own text; digits stay single tokens, as in Qwen's tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None, model_max_length=512)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def image_processor(side: int = IMAGE_SIDE) -> Qwen2VLImageProcessorPil:
    """The PIL-backed Qwen2-VL processor (the torchvision one cannot be installed beside CPU torch)."""
    return Qwen2VLImageProcessorPil(min_pixels=side * side, max_pixels=side * side)


def _mrope_section(head_dim: int) -> list:
    half = head_dim // 2              # M-RoPE splits half the head into time, height, width
    t = half // 4
    return [t, (half - t) // 2, half - t - (half - t) // 2]


def config_for(preset, tokenizer) -> Qwen2VLConfig:
    p = PRESETS[preset] if isinstance(preset, str) else preset
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = p["hidden"] // p["heads"]
    text = dict(vocab_size=len(tokenizer), hidden_size=p["hidden"], intermediate_size=p["hidden"] * 3,
                num_hidden_layers=p["layers"], num_attention_heads=p["heads"], num_key_value_heads=p["heads"],
                max_position_embeddings=512, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": float(p["rope_theta"]),
                                 "mrope_section": _mrope_section(head_dim)})
    vision = dict(depth=p["vision_depth"], embed_dim=p["vision_width"], hidden_size=p["hidden"],
                  num_heads=p["vision_heads"], mlp_ratio=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, in_channels=3)
    return Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                         video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                         vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)


def build(preset, tokenizer, seed: int = 0) -> Qwen2VLForConditionalGeneration:
    """A freshly initialised tiny Qwen2-VL (seeded), float32, in train mode."""
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config_for(preset, tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.float().train()


def save(folder, model, tokenizer, processor) -> Path:
    """Model, tokenizer and image processor side by side, as a real checkpoint folder is laid out."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def load(name_or_path, dtype=torch.float32):
    """(model, tokenizer, image processor) from a local folder or a hub id already in the local cache.

    Offline (HF_HUB_OFFLINE=1, the default here) an id that is not cached fails at once with a
    message that says so, instead of a long trace from deep inside the hub client.
    """
    spec = str(name_or_path)
    if spec in PRESETS:
        raise ValueError(f"{spec!r} is a preset: use ost.models.base.load_base({spec!r}) for the pretrained base, "
                         f"or ost.models.presets.build({spec!r}, tokenizer) for a fresh one")
    local = Path(spec).expanduser()
    if not local.exists() and (spec.startswith((".", "/", "~")) or spec.count("/") > 1):
        raise FileNotFoundError(f"model folder {local} does not exist")
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(spec) if (local / "tokenizer.json").exists() \
            else _auto_tokenizer(spec)
        processor = Qwen2VLImageProcessorPil.from_pretrained(spec)
        model = AutoModelForImageTextToText.from_pretrained(spec, dtype=dtype)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = ("HF_HUB_OFFLINE=1 is set, so nothing is downloaded: put the checkpoint in a local folder "
                "and pass its path, or pre-download it into the Hugging Face cache on a machine with "
                "network access" if offline else "check the id or path")
        raise OSError(f"cannot load model {spec!r}: {hint}. ({type(err).__name__}: {str(err)[:200]})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, processor


def _auto_tokenizer(spec):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(spec)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
