"""Model surgery on real Hugging Face BERTs: same function, merge to stock, save/load without opdf-ray."""

import json
import re
import subprocess
import sys

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from conftest import tiny_bert
from opdf_ray import mpo
from opdf_ray.overparam import (DEFAULT_TARGETS, find_targets, merge, mpo_modules, overparameterize,
                                parameter_counts)

SIX = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
       "intermediate.dense", "output.dense")


@pytest.mark.parametrize("layers,hidden,heads,intermediate,n_cores", [
    (2, 48, 4, 96, 5), (3, 64, 8, 256, 3), (1, 40, 5, 160, 7), (2, 96, 6, 384, 4)])
def test_overparameterized_bert_computes_the_same_logits(tokens, layers, hidden, heads, intermediate, n_cores):
    model = tiny_bert(layers, hidden, heads, intermediate)
    with torch.no_grad():
        before = model(**tokens).logits
    overparameterize(model, n_cores)
    names = list(mpo_modules(model))
    assert names == [f"bert.encoder.layer.{i}.{m}" for i in range(layers) for m in SIX]
    assert all(m.n_cores == n_cores for m in mpo_modules(model).values())
    with torch.no_grad():
        torch.testing.assert_close(model(**tokens).logits, before, rtol=0, atol=1e-5)
    assert type(model.bert.pooler.dense) is nn.Linear and type(model.classifier) is nn.Linear


def test_targets_are_configurable_by_name_pattern():
    model = overparameterize(tiny_bert(), 3, targets=[r".*attention\.self\.(query|value)"])
    assert sorted(mpo_modules(model)) == [f"bert.encoder.layer.{i}.attention.self.{m}"
                                          for i in (0, 1) for m in ("query", "value")]


def test_default_targets_match_roberta_names_too():
    names = ["roberta.encoder.layer.3.attention.self.key", "encoder.layer.0.output.dense",
             "electra.encoder.layer.11.intermediate.dense"]
    assert all(any(re.fullmatch(p, n) for p in DEFAULT_TARGETS) for n in names)
    assert not any(re.fullmatch(p, "bert.pooler.dense") or re.fullmatch(p, "classifier") for p in DEFAULT_TARGETS)


def test_parameter_counts_separate_training_from_inference():
    model = tiny_bert(layers=2, hidden=48, intermediate=96)
    dense = sum(p.numel() for p in model.parameters())
    overparameterize(model, 5)
    counts = parameter_counts(model)
    extra = 2 * (4 * (mpo.count_params(*mpo.factor_shapes(48, 48, 5)) - 48 * 48)
                 + mpo.count_params(*mpo.factor_shapes(96, 48, 5)) - 96 * 48
                 + mpo.count_params(*mpo.factor_shapes(48, 96, 5)) - 48 * 96)
    assert counts == {"train": dense + extra, "inference": dense}


@pytest.mark.parametrize("layers,n_cores,expected", [(6, 5, 162_508_034), (6, 7, 210_283_778), (12, 7, 396_138_242)])
def test_bert_base_model_totals_match_the_published_table(layers, n_cores, expected):
    # ALGORITHMS.md §1.5. Built on the meta device: counts need shapes only, not 100M real weights.
    with torch.device("meta"):
        model = BertForSequenceClassification(BertConfig(num_hidden_layers=layers, num_labels=2))
    dense = sum(p.numel() for p in model.parameters())
    targets = [model.get_submodule(n) for n in find_targets(model)]
    assert len(targets) == 6 * layers
    extra = sum(mpo.count_params(*mpo.factor_shapes(m.out_features, m.in_features, n_cores))
                - m.out_features * m.in_features for m in targets)
    assert dense + extra == expected


def test_bert_base_width_layer_overparameterizes_to_the_table_count():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_hidden_layers=1, num_labels=2, vocab_size=100))
    dense = sum(p.numel() for p in model.parameters())
    overparameterize(model, 5)
    assert parameter_counts(model)["train"] - dense == 4 * (1_916_928 - 768 ** 2) + 2 * (7_667_712 - 3072 * 768)


def test_merged_model_is_stock_and_reproduces_the_trained_logits(tokens):
    model = overparameterize(tiny_bert(), 5).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    labels = torch.tensor([0, 1, 2, 1])
    for _ in range(3):
        optimizer.zero_grad()
        model(**tokens, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        trained = model(**tokens).logits
    merge(model)
    assert not mpo_modules(model)
    assert all(type(model.get_submodule(n)) is nn.Linear for n in find_targets(model))
    with torch.no_grad():
        assert (model(**tokens).logits - trained).abs().max() <= 1e-4


def test_merged_checkpoint_loads_in_stock_transformers_without_opdf_ray(tmp_path, tokens):
    model = overparameterize(tiny_bert(), 4)
    with torch.no_grad():
        for m in mpo_modules(model).values():
            m.cores[0].mul_(1.1)                           # make the merged weights differ from the originals
        expected = model(**tokens).logits
    merge(model).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert "opdf" not in (tmp_path / "config.json").read_text().lower()
    torch.save(tokens, tmp_path / "tokens.pt")
    script = f"""
import sys, torch
sys.modules["opdf_ray"] = None                                   # any import of opdf_ray now fails
from transformers import AutoModelForSequenceClassification
model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path)!r}).eval()
tokens = torch.load({str(tmp_path / 'tokens.pt')!r}, weights_only=True)
with torch.no_grad():
    print(model(**tokens).logits.tolist())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    reloaded = torch.tensor(json.loads(out.stdout.strip().splitlines()[-1]))
    assert (reloaded - expected).abs().max() <= 1e-4
    in_process = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert (in_process(**tokens).logits - expected).abs().max() <= 1e-4


def test_merge_of_a_plain_model_is_a_no_op(tokens):
    model = tiny_bert()
    with torch.no_grad():
        before = model(**tokens).logits
        assert torch.equal(merge(model)(**tokens).logits, before)


def test_no_match_error_names_the_patterns_and_real_modules():
    with pytest.raises(ValueError, match=r"no module of BertForSequenceClassification matched targets "
                                         r"\['nope'\].*bert\.encoder\.layer\.0\.attention\.self\.query"):
        overparameterize(tiny_bert(), 3, targets=["nope"])


def test_a_target_that_is_not_a_linear_is_rejected_before_anything_changes():
    model = tiny_bert()
    with pytest.raises(ValueError, match=r"must be nn\.Linear modules, but \[\('bert\.encoder\.layer\.0\.attention"
                                         r"\.output\.LayerNorm', 'LayerNorm'\)"):
        overparameterize(model, 3, targets=[r".*\.output\.(dense|LayerNorm)"])
    assert not mpo_modules(model)


def test_over_parameterizing_twice_says_merge_first():
    model = overparameterize(tiny_bert(), 3)
    with pytest.raises(ValueError, match="already over-parameterised: merge"):
        overparameterize(model, 3)


@pytest.mark.parametrize("kwargs,message", [
    ({"n_cores": 1}, "n_cores must be an int ≥ 2"),
    ({"n_cores": 3, "bond_dim": 0}, "bond_dim must be None"),
    ({"n_cores": 3, "style": "nope"}, "unknown MPO style"),
    ({"n_cores": 3, "targets": ["("]}, "is not a valid regular expression"),
    ({"n_cores": 3, "targets": []}, "targets must name at least one module pattern"),
])
def test_bad_settings_fail_before_any_module_is_replaced(kwargs, message):
    model = tiny_bert()
    with pytest.raises(ValueError, match=re.escape(message)):
        overparameterize(model, **kwargs)
    assert not mpo_modules(model)


def test_a_size_the_style_cannot_factor_fails_before_any_module_is_replaced():
    model = tiny_bert(layers=1, hidden=44, heads=4, intermediate=13)     # 13 is prime: FFN cannot be paper-split
    with pytest.raises(ValueError, match="rows=13 is prime"):
        overparameterize(model, 3)
    assert not mpo_modules(model)


def test_a_layer_list_is_over_parameterized_with_layer_relative_targets(tokens):
    model = tiny_bert(layers=2)
    with torch.no_grad():
        before = model(**tokens).logits
    overparameterize(model.bert.encoder.layer, 3)
    assert len(mpo_modules(model)) == 12
    with torch.no_grad():
        torch.testing.assert_close(model(**tokens).logits, before, rtol=0, atol=1e-5)
