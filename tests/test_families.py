"""Encoder families beyond BERT: RoBERTa (XLM-R: the same classes), ELECTRA, DeBERTa-v2 and DistilBERT. Every
method ± OPDF trains them, merges them and exports a student that stock transformers loads with the trained logits.
Tiny random configs built offline (transformers' own config classes, no download)."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from opdf_ray.config import RunSpec
from opdf_ray.engine import finalize, prepare, save_student, train
from opdf_ray.models import SUPPORTED_MODEL_TYPES, build_tiny_model, check_checkpoint

QUICK = dict(preset="tiny", max_train_samples=32, max_steps=2, batch_size=16, eval_batch_size=64, teacher_epochs=1,
             max_length=32, progress=False)
SIZES = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, num_labels=2,
             max_position_embeddings=130, type_vocab_size=2)      # 2 segment types: the tiny tokenizer's pairs


FAMILIES = ("roberta", "electra", "deberta-v2", "distilbert")


def tiny_teacher(family: str, folder):
    """A random 4-layer teacher of ``family`` with the tiny character tokenizer (any family reads its ids)."""
    import transformers as t

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(folder / "cache"))
    vocab = tokenizer.vocab_size
    config, model = {
        "roberta": (t.RobertaConfig(vocab_size=vocab, pad_token_id=0, **SIZES), t.RobertaForSequenceClassification),
        "electra": (t.ElectraConfig(vocab_size=vocab, embedding_size=32, **SIZES), t.ElectraForSequenceClassification),
        "deberta-v2": (t.DebertaV2Config(vocab_size=vocab, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                         **SIZES), t.DebertaV2ForSequenceClassification),
        "distilbert": (t.DistilBertConfig(vocab_size=vocab, dim=64, n_layers=4, n_heads=4, hidden_dim=128,
                                          num_labels=2, max_position_embeddings=130),
                       t.DistilBertForSequenceClassification)}[family]
    torch.manual_seed(0)
    path = folder / family
    model(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("families")
    return {family: tiny_teacher(family, folder) for family in FAMILIES}, folder / "cache"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method, cores", [("kd", 0), ("kd", 3), ("prokt", 3), ("lgtm", 3), ("theseus", 3),
                                           ("finetune", 3)])
def test_every_method_trains_merges_and_exports_the_family(teachers, family, method, cores, tmp_path):
    paths, cache = teachers
    spec = RunSpec(task="rte", teacher=str(paths[family]), method=method, opdf_cores=cores, cache_dir=str(cache),
                   output_dir=str(tmp_path / "out"), **QUICK)
    job = prepare(spec)
    results, exported = finalize(job, train(job))
    save_student(results, exported, job.data.tokenizer, tmp_path / "out")
    assert (results["trainable_params"] > results["inference_params"]) == (cores > 0)
    assert results["merge_max_abs_logit_diff"] <= 1e-4                       # merged = trained (MPO) student
    stock = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "model").eval()
    assert stock.config.model_type == family and stock.config.num_hidden_layers == 2
    assert sum(p.numel() for p in stock.parameters()) == results["inference_params"]
    batch = job.data.tokenizer(["a cat sat", "two dogs ran"], ["on a mat", "in a park"], padding=True,
                               return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(stock(**batch).logits, exported.eval()(**batch).logits, atol=1e-5)


def test_a_family_outside_the_table_is_refused_in_one_line(tmp_path):
    from transformers import AlbertConfig, AlbertForSequenceClassification

    AlbertForSequenceClassification(AlbertConfig(vocab_size=64, embedding_size=8, hidden_size=16, num_hidden_layers=2,
                                                 num_attention_heads=2, intermediate_size=32)).save_pretrained(
        tmp_path / "albert")
    with pytest.raises(ValueError, match=r"is a 'albert' model; opdf-ray distils .*roberta.*distilbert"):
        check_checkpoint(str(tmp_path / "albert"), "teacher")
    assert {"bert", "roberta", "xlm-roberta", "electra", "deberta-v2", "distilbert"} <= set(SUPPORTED_MODEL_TYPES)
