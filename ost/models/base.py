"""The base stage: each tiny preset is pretrained once on clean, cheap data, then cached.

A real Qwen-VL starts SFT already able to see and to add; a from-scratch tiny model does not,
and then seed noise drowns every data effect (docs/design.md). So each preset is pretrained in two
steps: its vision tower learns to tell digits apart (`pretrain_vision`), then, with the tower frozen,
the whole model learns digit captions ("Which digits are shown?") and text-only arithmetic. Every
warmup and SFT run starts from that base. The cache key is the preset, the recipe, the tokenizer
corpus and the generator version.
"""
import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from ost import runs
from ost.data import digits as dg
from ost.data import pool, schema
from ost.models import presets, train
from ost.runs import paths
from ost.runs.workers import bar

TOKENIZER_CORPUS = dict(n_groups=600, copies=1, seed=12345)   # text the BPE is trained on
BASE_RECIPE = dict(vision_images=6000, vision_epochs=3, n_samples=16000, epochs=3, batch_size=32, lr=2e-3, seed=0)
# A base's floats depend on the thread count it is trained with, and a table's numbers on those floats (the
# same Full-SFT run reached 60 % from a one-thread target base, 33.5 % from a two-thread one): each preset is
# built with a fixed count, whoever builds it first, on any machine. These are the counts results/main used.
BUILD_THREADS = {"proxy-small": 2, "proxy": 2, "target": 1}
CACHE_VERSION = 2     # bump when the recipe's code changes what a cached base holds (2: the faster SFT loop)


def _key(payload) -> str:
    return hashlib.sha256(json.dumps([CACHE_VERSION, pool.GENERATOR_VERSION, payload],
                                     sort_keys=True).encode()).hexdigest()[:10]


def tokenizer(vocab_size: int = 384):
    """The embedded tokenizer, trained once on the generator's text (cached under data/)."""
    folder = paths.DATA / "tokenizer" / f"bpe-{_key([TOKENIZER_CORPUS, vocab_size])}"
    if (folder / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    texts = [r["question"] + "\n" + r["answer"] for r in pool.make_pool_records(noise_rate=0.35,
                                                                                **TOKENIZER_CORPUS)]
    texts += [r["question"] + "\n" + r["answer"] for r in pool.make_base_records(2000)]
    tok = presets.train_tokenizer(texts, vocab_size)
    tok.save_pretrained(folder)
    return PreTrainedTokenizerFast.from_pretrained(folder)


def pretrain_vision(model, processor, n_images=6000, epochs=2, batch_size=64, lr=2e-3, seed=0,
                    progress=True) -> list:
    """Teach the vision tower to tell digits apart before it meets the language model.

    The analogue of Qwen-VL's pretrained ViT. Trained jointly from scratch, the tiny decoder learns
    the answer prior long before the tower learns to see and then stops listening to the image
    (measured: captions stuck at chance); a linear probe per merged token (10 digits + blank),
    trained with the tower and thrown away, gives the tower features worth attending to.
    """
    rng = np.random.default_rng([seed, 4])
    cells = [[None if rng.random() < 0.2 else int(rng.integers(10)) for _ in range(dg.GRID ** 2)]
             for _ in range(n_images)]
    vis = processor(images=[dg.draw(c, "pool", rng) for c in cells], return_tensors="pt")
    pix = vis["pixel_values"].view(n_images, -1, vis["pixel_values"].shape[-1])
    grid = vis["image_grid_thw"]
    labels = torch.tensor([[10 if d is None else d for d in c] for c in cells])
    tower = model.model.visual
    torch.manual_seed(seed)
    head = torch.nn.Linear(model.config.text_config.hidden_size, 11)
    opt = torch.optim.AdamW(list(tower.parameters()) + list(head.parameters()), lr=lr)
    history, steps = [], epochs * (n_images // batch_size)
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed))
    for step in bar(range(steps), desc="vision pretraining", progress=progress):
        pos = step % (n_images // batch_size)
        if pos == 0 and step:
            order = order[torch.randperm(n_images, generator=torch.Generator().manual_seed(seed + step))]
        idx = order[pos * batch_size:(pos + 1) * batch_size]
        feats = tower(pix[idx].flatten(0, 1), grid_thw=grid[idx]).pooler_output
        loss = torch.nn.functional.cross_entropy(head(feats), labels[idx].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


def base_dir(preset, threads=None, **recipe) -> Path:
    """Where a base is cached; one built with other than its BUILD_THREADS count (a robustness check:
    `ost.experiments.credibility`) gets a folder of its own, so it never replaces the base the tables use."""
    spec = presets.PRESETS[preset] if isinstance(preset, str) else preset
    name = preset if isinstance(preset, str) else "custom"
    own = threads is not None and threads != BUILD_THREADS.get(name)
    suffix = f"-{threads}threads" if own else ""
    return paths.DATA / "base" / f"{name}-{_key([spec, {**BASE_RECIPE, **recipe}, TOKENIZER_CORPUS])}{suffix}"


def _pretrain(preset, tok, proc, r, progress):
    model = presets.build(preset, tok, seed=r["seed"])
    vision_log = pretrain_vision(model, proc, r["vision_images"], r["vision_epochs"], seed=r["seed"],
                                 progress=progress)
    ds = schema.to_dataset(pool.make_base_records(r["n_samples"], seed=r["seed"]))
    log = train.sft(model, tok, proc, ds, epochs=r["epochs"], batch_size=r["batch_size"], lr=r["lr"],
                    seed=r["seed"], freeze_vision=True, progress=progress)
    return model, log, vision_log


def is_built(preset, threads=None, **recipe) -> bool:
    """Whether the base is cached: `base.json` is written last, so a build cut short does not count."""
    return (base_dir(preset, threads, **recipe) / "base.json").exists()


def load_base(preset: str = "proxy", progress: bool = True, threads=None, **recipe):
    """(model, tokenizer, processor) of the pretrained base of a preset; trains and caches it once, with
    the preset's BUILD_THREADS count unless `threads` says otherwise."""
    unknown = set(recipe) - set(BASE_RECIPE)
    if unknown:
        raise TypeError(f"unknown base recipe key(s) {sorted(unknown)}; known: {sorted(BASE_RECIPE)}")
    r = {**BASE_RECIPE, **recipe}
    folder = base_dir(preset, threads, **recipe)
    if is_built(preset, threads, **recipe):
        return presets.load(folder)
    tok, proc = tokenizer(), presets.image_processor()
    caller_threads = torch.get_num_threads()
    threads = threads or (BUILD_THREADS.get(preset) if isinstance(preset, str) else None)
    if threads:
        torch.set_num_threads(threads)
    try:
        model, log, vision_log = _pretrain(preset, tok, proc, r, progress)
    finally:
        torch.set_num_threads(caller_threads)
    presets.save(folder, model, tok, proc)
    (folder / "base.json").write_text(json.dumps({"preset": preset, "recipe": r, "threads": threads,
                                              "vision_loss": vision_log[-20:],
                                              **{k: v for k, v in log.items() if k != "adam_state"}}, indent=1))
    return presets.load(folder)


def load_model(name: str, progress: bool = True):
    """A preset's pretrained base (`"proxy"`, `"target"`, built once) or any checkpoint folder / hub id:
    the one switch a notebook parameter needs to move from the embedded models to real ones."""
    if name in presets.PRESETS:
        return load_base(name, progress=progress)
    return presets.load(name)


def _build_quietly(preset: str):
    start = time.perf_counter()
    load_base(preset, progress=False)
    return str(base_dir(preset)), time.perf_counter() - start


def build_bases(names) -> None:
    """Build the missing bases side by side, one process each, before a long job needs them one after another.

    Each build keeps its own BUILD_THREADS count, so its bytes are those of a build on its own: on 2 cores
    the proxy (2 threads) and the target (1 thread) take about as long together as the target alone.
    """
    unknown = sorted(set(names) - set(presets.PRESETS))
    if unknown:
        raise SystemExit(f"unknown preset(s) {unknown}; known: {sorted(presets.PRESETS)}")
    missing = [p for p in dict.fromkeys(names) if not is_built(p)]
    if not missing:
        return
    tokenizer()     # shared by every build: trained here once, not raced for by the workers
    print(f"building the base of {', '.join(missing)} ({len(missing)} processes) ...", flush=True)
    with runs.worker_pool(len(missing)) as workers:
        for preset, (folder, seconds) in zip(missing, workers.map(_build_quietly, missing)):
            print(f"  {preset}: {seconds:.0f} s -> {folder}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Build (once) the pretrained bases of embedded presets.")
    parser.add_argument("presets", nargs="+", help=f"any of {sorted(presets.PRESETS)}")
    build_bases(parser.parse_args().presets)
