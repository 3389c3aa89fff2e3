"""The single-run command end to end on real GLUE data with the tiny preset, and its input checks."""

import dataclasses
import json
import re
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from opdf_ray import run as run_cli
from opdf_ray.config import RunSpec
from opdf_ray.engine import run
from opdf_ray.loop import NonFiniteLossError

QUICK = dict(preset="tiny", max_train_samples=48, max_steps=3, batch_size=16, eval_batch_size=64, teacher_epochs=1,
             progress=False)


def test_kd_with_opdf_runs_end_to_end_and_saves_a_stock_student(tmp_path):
    spec = RunSpec(task="rte", method="kd", opdf_cores=3, cache_dir=str(tmp_path / "cache"),
                   output_dir=str(tmp_path / "out"), eval_steps=2, **QUICK)
    results = run(spec)
    assert results["steps"] == 3 and [h["step"] for h in results["history"]] == [2, 3]
    assert set(results["dev"]) == {"validation"} and 0 <= results["dev"]["validation"]["accuracy"] <= 100
    assert results["trainable_params"] > results["inference_params"]
    assert results["merge_max_abs_logit_diff"] <= 1e-4
    assert results["sizes"] == {"train": 48, "selection": 249, "validation": 277}
    assert results["teacher_finetune"]["dev"]["validation"]["accuracy"] > 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["spec"]["opdf_cores"] == 3 and saved["protocol"] == "selection"
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "model")
    assert sum(p.numel() for p in model.parameters()) == results["inference_params"]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out" / "model")
    assert tokenizer("a b")["input_ids"][0] == tokenizer.cls_token_id
    assert results["teacher_dev"] == results["teacher_finetune"]["dev"]
    again = run(spec)                                   # the fine-tuned teacher is reused, not retrained
    assert again["teacher_finetune"]["seconds"] == results["teacher_finetune"]["seconds"]


@pytest.mark.parametrize("method", ["kd", "theseus", "prokt", "lgtm"])
def test_the_reported_selection_scores_are_the_restored_students_own(method, tmp_path_factory):
    """``finalize`` reports the loop's evaluation of the best step instead of a second pass over the selection
    split: the student restored to that step must score exactly that. Evaluated every step at a high lr, KD's and
    ProKT's best step is the first of three, so reporting any other step's metrics fails here."""
    from opdf_ray.engine import finalize, prepare, train
    from opdf_ray.loop import evaluate

    cache = tmp_path_factory.getbasetemp() / "selection-cache"          # one teacher fine-tune for the four
    spec = RunSpec(task="rte", method=method, opdf_cores=3, cache_dir=str(cache), save_model=False, eval_steps=1,
                   lr=1e-3, **QUICK)
    job = prepare(spec)
    fitted = train(job)
    results, _ = finalize(job, fitted)
    again = evaluate(job.method.eval_model(), job.data.loader("selection", spec.eval_batch_size, False),
                     job.data.task, job.device, job.parallel, spec.bf16_on(job.device))
    assert results["selection"] == again and fitted.best_metrics is results["selection"]
    assert results["selection_score"] == fitted.best_score
    assert method not in ("kd", "prokt") or fitted.best_step < fitted.step         # the restore is exercised


def test_a_frozen_teacher_is_not_evaluated_again_and_a_trained_one_is(tmp_path):
    """KD's teacher ends the run as its fine-tune left it, so its dev scores are the fine-tune's (marked here);
    ProKT trains its teacher, so its end is measured."""
    spec = RunSpec(task="rte", method="kd", cache_dir=str(tmp_path / "cache"), save_model=False, **QUICK)
    run(spec)
    (info_file,) = (tmp_path / "cache" / "teachers").glob("rte-*/teacher.json")
    info = json.loads(info_file.read_text())
    info["dev"]["validation"]["accuracy"] = 12.5
    info_file.write_text(json.dumps(info))
    assert run(spec)["teacher_dev"]["validation"]["accuracy"] == 12.5
    prokt = run(dataclasses.replace(spec, method="prokt"))
    assert prokt["teacher_finetune"]["dev"]["validation"]["accuracy"] == 12.5      # the same fine-tuned teacher
    assert prokt["teacher_dev"]["validation"]["accuracy"] != 12.5


def test_the_finetuned_teacher_is_a_function_of_its_settings_not_of_the_process_rng(tmp_path):
    """A search fine-tunes it in a fresh Ray task; two searches (say two methods of a study) with the same settings
    must start from the same teacher, whatever the process's random state."""
    from safetensors.torch import load_file

    from opdf_ray.teacher import finetune_teacher_into

    spec = RunSpec(task="rte", cache_dir=str(tmp_path / "cache"), **QUICK).to_dict()
    weights = []
    for rng in (1, 2):
        torch.manual_seed(rng)
        path = finetune_teacher_into(spec, str(tmp_path / f"search{rng}"))
        weights.append(load_file(f"{path}/model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_cpu_bf16_with_opdf_trains_in_bf16_and_exports_the_fp32_student(tmp_path):
    """Weights contracted under bf16 autocast (training, evaluation) never serve an fp32 forward (the export check)."""
    spec = RunSpec(task="rte", method="prokt", opdf_cores=3, cpu_bf16=True, cache_dir=str(tmp_path / "cache"),
                   save_model=False, eval_steps=2, **QUICK)
    results = run(spec)
    assert results["steps"] == 3 and results["merge_max_abs_logit_diff"] <= 1e-4


def test_mnli_runs_with_matched_and_mismatched_dev(tmp_path):
    from test_data import write_mnli_parquet

    write_mnli_parquet(tmp_path / "glue", rows=40)
    results = run(RunSpec(task="mnli", method="prokt", data_dir=str(tmp_path / "glue"),
                          cache_dir=str(tmp_path / "cache"), save_model=False, **QUICK))
    assert set(results["dev"]) == {"validation_matched", "validation_mismatched"}
    assert set(results["teacher_dev"]) == {"validation_matched", "validation_mismatched"}


def test_dev_selection_protocol_is_recorded(tmp_path):
    results = run(RunSpec(task="rte", method="finetune", select_on="dev", cache_dir=str(tmp_path),
                          save_model=False, **QUICK))
    assert results["protocol"] == "dev"
    assert results["selection_score"] == results["dev"]["validation"]["accuracy"]


def test_a_nan_loss_fails_the_run(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step \d \(this worker: {.loss.: nan"):
        run(RunSpec(task="rte", method="finetune", lr=1e30, cache_dir=str(tmp_path), save_model=False, **QUICK))


def test_help_lists_every_flag():
    out = subprocess.run([sys.executable, "-m", "opdf_ray.run", "--help"], capture_output=True, text=True, check=True)
    for flag in ("--task", "--method", "--opdf-cores", "--opdf-bond-dim", "--lgtm-variant", "--lgtm-feedback",
                 "--student-init", "--teacher-init", "--opdf-align-map", "--select-on",
                 "--replacing-scheduler", "--cache-teacher-logits", "--no-cache-teacher-logits", "--data-dir"):
        assert flag in out.stdout


@pytest.mark.parametrize("argv,message", [
    (["--task", "glue"], "--task 'glue' is not a GLUE task (cola, sst2"),
    (["--task", "data/examples/reviews.csv", "--text-columns", "review"], "no column(s) ['label']; its columns: "),
    (["--task", "rte", "--label-column", "y"], "label_column describe your own data, but task='rte' is GLUE's"),
    (["--method", "distill"], "invalid choice: 'distill'"),
    (["--max-length", "0"], "max_length=0 is invalid; allowed: an int in 1..1,048,576"),
    (["--opdf-cores", "1"], "opdf_cores=1 is invalid; allowed: 0 (off) or an int in 2..16"),
    (["--opdf-bond-dim", "8"], "opdf_bond_dim is set but OPDF is off"),
    (["--preset", "tiny", "--opdf-cores", "14", "--opdf-style", "balanced"], "use n_cores ≤ 13"),
    (["--preset", "tiny", "--method", "theseus", "--student-layers", "0,1,2"], "multiple of the student's (3)"),
    (["--preset", "tiny", "--student-layers", "0,9"], "student layers [0, 9] do not exist in the 4-layer teacher"),
    (["--task", "qnli", "--preset", "tiny"], "GLUE qnli/train not found"),
    (["--teacher", "/nonexistent/model"], "could not load '/nonexistent/model'"),
    (["--pad-to-multiple-of", "0"], "pad_to_multiple_of=0 is invalid; allowed: None or an int in 1..4,096"),
])
def test_bad_input_fails_before_any_training(argv, message, tmp_path, capsys):
    code = None
    try:
        code = run_cli.main([*argv, "--cache-dir", str(tmp_path), "--no-progress"])
    except SystemExit as e:                       # argparse's own errors
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "teachers").exists()


def test_result_line_summarises_the_run():
    results = {"task": "rte", "method": "kd", "protocol": "selection", "spec": {"opdf_cores": 5}, "best_step": 7,
               "selection": {"accuracy": 61.0}, "dev": {"validation": {"accuracy": 60.5}},
               "trainable_params": 2000, "inference_params": 1000, "wall_seconds": 12.3, "examples_per_second": 4.56}
    line = run_cli.result_line(results)
    assert re.fullmatch(r"RESULT task=rte method=kd opdf=5 protocol=selection selection\[accuracy=61\.00\] "
                        r"dev\[validation:accuracy=60\.50\] best_step=7 train_params=2,000 inference_params=1,000 "
                        r"wall=12s train_ex/s=4\.6", line)


def test_cuda_device_without_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        run(RunSpec(device="cuda", cache_dir=str(tmp_path), **QUICK))


def test_batches_are_padded_to_the_multiple_asked_for_and_padding_changes_no_prediction(tmp_path):
    from opdf_ray.batches import prepare_data
    from opdf_ray.engine import prepare
    from opdf_ray.loop import evaluate

    spec = RunSpec(task="rte", method="kd", cache_dir=str(tmp_path), max_length=60, **QUICK)
    job = prepare(spec)
    assert job.data.pad_to_multiple_of is None               # CPU default: the longest example of the batch
    lengths = {b["input_ids"].shape[1] for b in job.data.loader("validation", 32, shuffle=False)}
    assert any(n % 8 for n in lengths)
    padded = prepare_data(RunSpec(task="rte", max_length=60, pad_to_multiple_of=8, **QUICK), job.data.tokenizer,
                          tmp_path, job.device)
    assert padded.pad_to_multiple_of == 8 and job.spec.padding_multiple_on(torch.device("cuda")) == 8
    loader = padded.loader("validation", 32, shuffle=False)
    assert all(b["input_ids"].shape[1] % 8 == 0 for b in loader)
    model = job.method.eval_model()
    plain = evaluate(model, job.data.loader("validation", 32, shuffle=False), job.data.task, job.device)
    assert evaluate(model, loader, job.data.task, job.device) == pytest.approx(plain, abs=1e-6)


def test_kd_reads_the_teacher_logits_an_earlier_run_of_the_same_teacher_and_rows_computed(tmp_path, caplog):
    """A search's KD trials share the frozen teacher's training-split logits (kept in the fine-tuned teacher's
    folder), computed once: a trial that reads them trains exactly as one that computed them."""
    import logging

    spec = RunSpec(task="rte", method="kd", cache_dir=str(tmp_path / "cache"), save_model=False, **QUICK)
    first = run(spec)
    (kept,) = (tmp_path / "cache" / "teachers").glob("rte-*/logits/*.safetensors")
    with caplog.at_level(logging.INFO, logger="opdf_ray.teacher"):
        second = run(spec)
    assert f"read from {kept}" in caplog.text
    assert second["history"] == first["history"] and second["dev"] == first["dev"]
    run(dataclasses.replace(spec, eval_batch_size=32))   # batched otherwise: the last bits may move, own logits
    assert len(list(kept.parent.iterdir())) == 2
