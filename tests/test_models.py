"""Model sources: the packaged offline MiniLM and students made from teacher layers."""

import re

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from conftest import tiny_bert
from opdf_ray.models import keep_layers, packaged_minilm_path


def test_packaged_minilm_is_found_offline():
    path = packaged_minilm_path()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def test_keep_layers_copies_the_chosen_teacher_layers_in_order(tmp_path, tokens):
    teacher = tiny_bert(layers=4)
    student = keep_layers(teacher, [0, 2])
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    for s_idx, t_idx in ((0, 0), (1, 2)):
        s_layer, t_layer = student.bert.encoder.layer[s_idx], teacher.bert.encoder.layer[t_idx]
        assert torch.equal(s_layer.intermediate.dense.weight, t_layer.intermediate.dense.weight)
        assert s_layer.intermediate.dense.weight is not t_layer.intermediate.dense.weight
        assert s_layer.attention.self.layer_idx == s_idx
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**tokens).logits, student(**tokens).logits)


@pytest.mark.parametrize("ids,message", [([], "distinct ints in 0..3"), ([0, 0], "distinct"), ([4], "0..3")])
def test_keep_layers_rejects_bad_ids(ids, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        keep_layers(tiny_bert(layers=4), ids)


def test_keep_layers_rejects_a_model_without_encoder_layers():
    with pytest.raises(ValueError, match="no base_model.encoder.layer list"):
        keep_layers(torch.nn.Linear(2, 2), [0])


def test_checkpoints_never_run_their_own_code(tmp_path):
    import subprocess
    from pathlib import Path

    from transformers import AutoConfig

    from opdf_ray.models import from_pretrained

    with pytest.raises(ValueError, match="never executes code shipped with a checkpoint"):
        from_pretrained(AutoConfig, str(tmp_path), trust_remote_code=False)   # the keyword itself is refused
    repo = Path(__file__).resolve().parent.parent
    keyword, on = "trust_remote" + "_code", "".join(["T", "r", "u", "e"])   # spelled apart: no line enables it
    enabled = keyword + r"['\"]?\s*[=:]\s*" + on                       # keyword or dict form, in any tracked file
    tracked = subprocess.run(["git", "grep", "-lE", enabled], cwd=repo, capture_output=True, text=True).stdout
    assert tracked == ""


def test_models_load_without_hub_kernels(tmp_path):
    """transformers 5.25 kernelizes every loaded model with kernels fetched from the hub (on by default, on CUDA a
    download at run time: offline it fails); a model loaded here never is."""
    from transformers import BertConfig

    from opdf_ray.models import from_pretrained

    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path)
    assert from_pretrained(AutoModelForSequenceClassification, str(tmp_path)).use_kernels is False
