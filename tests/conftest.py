"""Shared tiny fixtures: a tokenizer trained on a few hundred generated texts, the image processor,
and a tiny custom Qwen2-VL size so model tests take seconds."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

from ost import models, pool

TINY = dict(hidden=32, layers=1, heads=2, vision_width=32, vision_depth=1, vision_heads=2, rope_theta=10.0)


@pytest.fixture(scope="session")
def records():
    return pool.make_pool_records(n_groups=40, copies=2, seed=1)


@pytest.fixture(scope="session")
def tokenizer(records):
    texts = [r["question"] + "\n" + r["answer"] for r in records + pool.make_base_records(100)]
    return models.train_tokenizer(texts, vocab_size=320)


@pytest.fixture(scope="session")
def processor():
    return models.image_processor()


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
