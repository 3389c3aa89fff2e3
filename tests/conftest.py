"""Shared fixtures: tiny random BERTs built in code (fast, offline)."""

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):   # never reach for a hub in tests
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


def tiny_bert(layers=2, hidden=48, heads=4, intermediate=96, num_labels=3, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=120, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, max_position_embeddings=64, num_labels=num_labels)
    return BertForSequenceClassification(config).eval()


@pytest.fixture
def tokens():
    torch.manual_seed(123)
    return {"input_ids": torch.randint(0, 120, (4, 11)), "attention_mask": torch.ones(4, 11, dtype=torch.long)}
