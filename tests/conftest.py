"""Shared tiny fixtures: a tokenizer trained on a few hundred generated texts, the image processor,
and a tiny custom Qwen2-VL size so model tests take seconds."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

from ost.data import pool
from ost.models import presets

TINY = dict(hidden=32, layers=1, heads=2, vision_width=32, vision_depth=1, vision_heads=2, rope_theta=10.0)


@pytest.fixture(scope="session")
def records():
    return pool.make_pool_records(n_groups=40, copies=2, seed=1)


@pytest.fixture(scope="session")
def tokenizer(records):
    texts = [r["question"] + "\n" + r["answer"] for r in records + pool.make_base_records(100)]
    return presets.train_tokenizer(texts, vocab_size=320)


@pytest.fixture(scope="session")
def processor():
    return presets.image_processor()


def saved_tiny(root, tokenizer, processor, **splits):
    """(folder of a saved TINY model, DatasetDict of `splits` saved and loaded back): what worker
    processes are handed, a model path and a memory-mapped dataset that pickles by its files."""
    import datasets

    from ost.data import schema
    folder = presets.save(root / "model", presets.build(TINY, tokenizer, seed=0), tokenizer, processor)
    datasets.DatasetDict({name: schema.to_dataset(rows) for name, rows in splits.items()}).save_to_disk(root / "pool")
    return str(folder), datasets.load_from_disk(root / "pool")


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
