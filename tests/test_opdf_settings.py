"""The OPDF settings that make results trustworthy: an exact teacher, alignment with the layers that match, a
scale-free alignment weight, one starting point for every method, LGTM feedback that never judges itself, and
fine-tuned teachers keyed by every setting they depend on."""

from pathlib import Path

import pandas as pd
import pytest
import torch
from rows import completed_result
from test_methods import make_batch, teacher_model

from opdf_ray.config import RunSpec
from opdf_ray.data import load_glue
from opdf_ray.engine import prepare
from opdf_ray.leaderboard import make_row, read_leaderboard, write_row
from opdf_ray.losses import tensor_alignment_loss
from opdf_ray.methods import get_method
from opdf_ray.models import keep_layers
from opdf_ray.overparam import mpo_modules, overparameterize
from opdf_ray.report import build_table
from opdf_ray.teacher import finetune_teacher_into

INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def build(method, layers=(0, 2), **overrides):
    spec = RunSpec(task="rte", method=method, preset="tiny", student_layers=",".join(map(str, layers)),
                   **overrides)
    teacher = teacher_model(dropout=0.0)
    m = get_method(method)(spec, keep_layers(teacher, list(layers)), teacher)
    m.apply_opdf()
    m.setup(total_steps=10)
    return m


@pytest.mark.parametrize("method", ["kd", "prokt", "theseus"])
def test_a_truncated_student_distils_from_the_exact_teacher(method):
    dense = teacher_model(dropout=0.0).eval()
    m = build(method, opdf_cores=3, opdf_bond_dim=2, init_classifier_to_zero=False)
    batch = make_batch()
    with torch.no_grad():
        expected = dense(**{k: batch[k] for k in INPUTS}).logits
        got = m.teacher.eval()(**{k: batch[k] for k in INPUTS}).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    student = next(iter(mpo_modules(m.student_layers()).values()))
    assert max(c.shape[-1] for c in student.cores[:-1]) <= 2                     # the student is compressed
    assert all(c.shape == t.shape for c, t in zip(
        student.cores, next(iter(mpo_modules(m.align_targets).values())).cores))  # targets at the student's rank
    assert not any(p.requires_grad for p in m.align_targets.parameters())         # frozen


def test_alignment_pairs_each_student_layer_with_the_teacher_layer_it_was_copied_from():
    m = build("kd", layers=(1, 3), opdf_cores=3)
    assert m.alignment_layer_map() == {0: 1, 1: 3}
    assert m.alignment_loss().item() == pytest.approx(0.0, abs=1e-10)   # identical cores at the start
    assert build("kd", layers=(0, 2), opdf_cores=3).alignment_layer_map() == {0: 0, 1: 2}
    published = build("kd", layers=(0, 2), opdf_cores=3, opdf_align_map="block-last")
    assert published.alignment_layer_map() == {0: 1, 1: 3}                  # the published 2i+1
    assert published.alignment_loss().item() > 0                             # layer 0 is not layer 1


def test_normalised_alignment_loss_does_not_depend_on_the_weights_scale():
    def loss(scale, normalize):
        torch.manual_seed(0)
        teacher, student = torch.nn.Linear(24, 36), torch.nn.Linear(24, 36)
        for module in (teacher, student):
            module.weight.data *= scale
        t, s = (torch.nn.ModuleList([overparameterize(torch.nn.Sequential(m), 5, targets=["0"])])
                for m in (teacher, student))
        return tensor_alignment_loss(s, t, layer_map=[0], normalize=normalize).item()

    assert loss(10.0, True) == pytest.approx(loss(1.0, True), rel=1e-4)
    assert loss(10.0, False) > 5 * loss(1.0, False)


def teacher_and_student_logits(m, batch):
    inputs = {k: batch[k] for k in INPUTS}
    with torch.no_grad():
        t_logits = m.teacher(**inputs).logits
    return m.student(**inputs).logits, t_logits, batch["labels"]


def test_the_alignment_to_distillation_gradient_ratio_is_logged():
    m = build("kd", opdf_cores=3, opdf_align_weight=1e-3)
    for step in range(3):
        logs = m.train_step(make_batch(step))
    assert 0 < logs["align_grad_ratio"] < float("inf")
    # by definition: ‖∇ alignment‖ / ‖∇ the rest‖ over the aligned cores, the alignment's by autograd of its loss
    loss = m.student_loss(*teacher_and_student_logits(m, make_batch(7)))[0]     # the rest: distillation
    m.gradients_of(m.student_opt).zero_grad()
    loss.backward()
    m.reduce_gradients(m.student_opt)
    cores = [p for mod in mpo_modules(m.student_layers()).values() for p in mod.cores]
    pull = torch.autograd.grad(m.alignment_loss(), cores, allow_unused=True)
    align = sum(float((g ** 2).sum()) for g in pull if g is not None) ** 0.5
    rest = sum(float((p.grad ** 2).sum()) for p, g in zip(cores, pull) if g is not None) ** 0.5
    logs = m.add_alignment({"loss": loss.detach()})
    assert float(logs["align_grad_ratio"]) == pytest.approx(align / rest, rel=1e-4)
    assert "align_grad_ratio" not in build("kd", opdf_cores=3, opdf_align_weight=0.0).train_step(make_batch())
    m.log_details = False                          # a step whose logs nobody reads: no ratio, the same training
    assert "align_grad_ratio" not in m.train_step(make_batch(8)) and "align" in m.train_step(make_batch(9))


def test_lgtm_feedback_and_checkpoint_selection_use_disjoint_halves_of_the_held_out_slice():
    shared, split = load_glue("rte", feedback="shared"), load_glue("rte", feedback="split")
    assert shared.feedback is shared.selection
    together = pd.concat([split.selection, split.feedback])
    assert len(split.selection) + len(split.feedback) == len(shared.selection)
    assert not together.duplicated().any() and len(together.merge(shared.selection)) == len(shared.selection)


def test_every_method_starts_from_the_fine_tuned_teacher_unless_asked_otherwise(tmp_path):
    common = dict(task="rte", preset="tiny", max_train_samples=32, batch_size=16, teacher_epochs=1, max_length=32,
                  cache_dir=str(tmp_path / "cache"), progress=False, teacher_finetune_lr=1e-3)
    tuned = prepare(RunSpec(method="kd", **common))
    ref = tuned.method.teacher.bert.encoder.layer[2].output.dense.weight
    for method in ("prokt", "lgtm", "finetune"):
        job = prepare(RunSpec(method=method, init_classifier_to_zero=False, **common))
        assert job.teacher_info, method                      # the cached fine-tuned teacher was used
        torch.testing.assert_close(job.method.student.bert.encoder.layer[1].output.dense.weight, ref)
        if job.method.teacher is not None:
            torch.testing.assert_close(job.method.teacher.bert.encoder.layer[2].output.dense.weight, ref)
    published = prepare(RunSpec(method="prokt", student_init="pretrained", teacher_init="pretrained", **common))
    assert not published.teacher_info
    assert not torch.equal(published.method.student.bert.encoder.layer[1].output.dense.weight, ref)


def test_a_fine_tuned_teacher_is_never_reused_under_other_settings(tmp_path):
    spec = RunSpec(task="rte", preset="tiny", max_train_samples=32, batch_size=16, teacher_epochs=1, max_length=32,
                   cache_dir=str(tmp_path / "cache"), progress=False)
    quick = finetune_teacher_into(spec.to_dict(), str(tmp_path / "exp"))
    again = finetune_teacher_into(spec.to_dict(), str(tmp_path / "exp"))
    bigger = finetune_teacher_into(RunSpec.from_dict(spec.to_dict() | {"max_train_samples": 48}).to_dict(),
                                   str(tmp_path / "exp"))
    assert quick == again and bigger != quick
    assert sorted(p.name for p in (tmp_path / "exp" / "teachers").iterdir()) == sorted(
        [quick.rsplit("/", 1)[1], bigger.rsplit("/", 1)[1]])


def test_a_fine_tuned_teacher_is_keyed_by_content_not_paths(tmp_path):
    """A moved copy of the data or of the teacher's checkpoint reuses the teacher; a file replaced in place does not."""
    import shutil

    from opdf_ray.models import build_tiny_model

    shutil.copytree(Path(__file__).parent.parent / "data" / "glue" / "rte", tmp_path / "data" / "rte")
    shutil.copytree(build_tiny_model(tmp_path / "cache"), tmp_path / "bert")
    spec = RunSpec(task="rte", preset="tiny", max_train_samples=32, batch_size=16, teacher_epochs=1, max_length=32,
                   cache_dir=str(tmp_path / "cache"), progress=False)

    def teacher(data: Path, checkpoint: Path) -> str:
        changed = {"data_dir": str(data), "teacher": str(checkpoint)}
        return finetune_teacher_into(spec.to_dict() | changed, str(tmp_path / "exp")).rsplit("/", 1)[1]

    first = teacher(tmp_path / "data", tmp_path / "bert")
    shutil.move(tmp_path / "data", tmp_path / "moved-data")
    shutil.move(tmp_path / "bert", tmp_path / "moved-bert")
    assert teacher(tmp_path / "moved-data", tmp_path / "moved-bert") == first
    train = tmp_path / "moved-data" / "rte" / "train.parquet"
    pd.read_parquet(train).iloc[::-1].to_parquet(train)                   # same file name, other order
    other_data = teacher(tmp_path / "moved-data", tmp_path / "moved-bert")
    weights = tmp_path / "moved-bert" / "model.safetensors"
    from safetensors.torch import load_file, save_file
    tensors = load_file(weights)
    save_file({k: v + 0.01 for k, v in tensors.items()}, weights)
    other_weights = teacher(tmp_path / "moved-data", tmp_path / "moved-bert")
    assert len({first, other_data, other_weights}) == 3
    assert len(list((tmp_path / "exp" / "teachers").iterdir())) == 3


def test_rows_distilled_from_a_truncated_teacher_are_flagged_and_left_out_of_reports(tmp_path):
    spec = RunSpec(task="mrpc", opdf_cores=3, opdf_bond_dim=8).to_dict()
    write_row(str(tmp_path), make_row("run", "new", "completed", spec, completed_result("mrpc", 70.0, 80.0)))
    import pyarrow as pa
    import pyarrow.parquet as pq

    old = pq.read_table(tmp_path / "task=mrpc" / "run--new.parquet").drop_columns(["teacher_truncated"])
    old = old.set_column(old.schema.get_field_index("trial_id"), "trial_id", pa.array(["old"]))
    pq.write_table(old.replace_schema_metadata({"schema_version": "2"}), tmp_path / "task=mrpc" / "run--old.parquet")
    dense = RunSpec(task="mrpc").to_dict()
    write_row(str(tmp_path), make_row("run", "dense", "completed", dense, completed_result("mrpc", 60.0, 70.0)))
    board = read_leaderboard(str(tmp_path)).set_index("trial_id")
    assert bool(board.loc["old", "teacher_truncated"]) and not bool(board.loc["new", "teacher_truncated"])
    table = build_table(board.reset_index())
    labels = [r["label"] for r in table.rows]
    assert labels == ["KD", "+ MPO compression (3 cores, bond 8)"]           # never inside "+ OPDF (n cores)"
    assert table.rows[1]["cells"]["MRPC F1"][2] == 1                            # the old row is left out


def test_a_student_model_with_the_init_alignment_map_is_a_clear_error():
    with pytest.raises(ValueError, match="use --opdf-align-map block-last"):
        RunSpec(student="some/model", opdf_cores=3)
    RunSpec(student="some/model", opdf_cores=3, opdf_align_map="block-last")
