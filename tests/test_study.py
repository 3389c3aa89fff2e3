"""The study driver (benchmarks/study/run.py) keeps what a study needs across sessions and nothing more."""

import importlib.util
from pathlib import Path

import pytest


def load(script: str):
    """A script of benchmarks/study as a module."""
    path = Path(__file__).resolve().parent.parent / "benchmarks/study" / script
    spec = importlib.util.spec_from_file_location(f"study_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_study_deletes_the_checkpoints_of_a_finished_grid_and_nothing_else(tmp_path):
    study = load("run.py")
    experiment = tmp_path / "study-kd-s1-mrpc"
    for trial in ("a1", "b2"):
        (experiment / "train" / trial / "checkpoint_000001").mkdir(parents=True)
        (experiment / "train" / trial / "checkpoint_000001" / "model.safetensors").write_bytes(b"x" * 1000)
    snapshot = experiment / "train" / "a1" / "checkpoint_manager_snapshot.json"   # a file Ray Train writes there
    snapshot.write_text("{}")
    (experiment / "a1").mkdir()
    (experiment / "a1" / "result.json").write_text("{}")
    assert study.drop_checkpoints(experiment) == 2000
    assert list(experiment.glob("train/*/checkpoint_*")) == [snapshot]
    assert (experiment / "a1" / "result.json").exists() and (experiment / "train" / "a1").is_dir()


def test_update_size_measures_the_teacher_prokt_trains_as_mpo_cores(tmp_path):
    """``--model teacher``: ProKT's teacher (all its layers) moves from step 2 on (its classifier zeroed at the start,
    as published, so step 1 moves only that), dense or trained as MPO cores, and the teacher loss is recorded."""
    from opdf_ray.config import RunSpec

    update_size = load("update_size.py")
    common = dict(task="rte", method="prokt", preset="tiny", max_train_samples=64, batch_size=16, progress=False,
                  cache_dir=str(tmp_path / "cache"), init_classifier_to_zero=True)
    names = None                                            # named on the dense teacher, as main() does
    for cores in (0, 3):
        names, change, loss = update_size.relative_changes(RunSpec(opdf_cores=cores, **common), None, [1, 2], names,
                                                           model="teacher")
        assert len(names) == 4 * 6                          # the tiny teacher's 4 layers × 6 encoder matrices
        assert max(change[1]) == 0 and min(change[2]) > 0
        assert all(0 < loss[k] < 5 for k in (1, 2))


def test_update_size_refuses_a_teacher_the_method_does_not_train(tmp_path, capsys):
    update_size = load("update_size.py")
    (tmp_path / "teacher.json").write_text("{}")
    with pytest.raises(SystemExit):
        update_size.main(["--teacher", str(tmp_path), "--method", "kd", "--model", "teacher"])
    assert "kd does not train its teacher; use --method prokt or lgtm" in capsys.readouterr().err


@pytest.mark.parametrize("core_lr, control", [("'1.0'", {"dense_lr_as_cores": 4}), (None, {})])
def test_ablations_of_the_best_opdf_configuration_drop_only_what_they_ablate(tmp_path, monkeypatch, core_lr,
                                                                             control):
    """align-off: the best OPDF configuration with every core trained and no alignment; dense-control: it without
    OPDF, stepping as its cores did (κ × lr where they took the dense lr, plain lr where matched). Both load."""
    from opdf_ray.config import RunSpec
    from opdf_ray.search_space import load_space

    study = load("run.py")
    monkeypatch.setattr(study, "SPACES", tmp_path)
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "kd-opdf-sst2.yaml").write_text(
        "# config_id abc: opdf-ray search ...\n"
        "fixed: {method: kd, lr: 3.0e-4, temperature: 2.0, eval_steps: 16, opdf_cores: 4, "
        f"opdf_train_cores: central{', opdf_core_lr: ' + core_lr if core_lr else ''}}}\n"
        "params: {seed: {type: categorical, choices: [1, 2, 3]}}\n")
    align_off, dense = (load_space(path) for path in study.ablation_spaces("sst2"))
    shared = {"method": "kd", "lr": 3.0e-4, "temperature": 2.0, "eval_steps": 16}
    assert align_off.fixed == shared | {"opdf_cores": 4, "opdf_align_weight": 0.0, "opdf_align_ratio": 0.0} | (
        {"opdf_core_lr": "1.0"} if core_lr else {})
    assert dense.fixed == shared | control
    for space in (align_off, dense):
        RunSpec.from_dict({"task": "sst2", "seed": 1, **space.fixed})            # a valid run, as a trial gets it
        assert [p.name for p in space.params] == ["seed"]


def test_the_ablation_report_sets_the_best_opdf_configuration_against_its_own_dense_control(tmp_path):
    """equal-report's ablations: KD's best OPDF configuration on the task (its seed re-runs) and its ablations only;
    the dense search's best and other tasks stay out, so the dense row of the verdict is the dense control."""
    from rows import completed_result

    from opdf_ray.config import RunSpec
    from opdf_ray.leaderboard import make_row, write_row
    from opdf_ray.report import render

    study = load("run.py")
    seeds, ablations = tmp_path / "equal-seeds", tmp_path / "equal-ablations"
    best = dict(method="kd", lr=3e-4, opdf_cores=5, opdf_train_cores="central")
    runs = [(seeds, "study-best-kd-opdf-s0", "sst2", best, 80.0),
            (seeds, "study-best-kd-s0", "sst2", dict(method="kd", lr=1e-4), 90.0),      # the dense search's best
            (seeds, "study-best-kd-opdf-s0", "mrpc", best, 80.0),                       # another task
            (ablations, "study-kd-opdf-sst2-align-off-s0", "sst2",
             dict(best, opdf_train_cores="all", opdf_align_weight=0.0, opdf_align_ratio=0.0), 78.0),
            (ablations, "study-kd-opdf-sst2-dense-control-s0", "sst2", dict(method="kd", lr=3e-4), 79.0)]
    for board, run, task, settings, dev in runs:
        for seed in (1, 2, 3):
            spec = RunSpec(task=task, seed=seed, **settings).to_dict()
            result = completed_result(task, dev, dev + seed / 10 * (run.endswith("opdf-s0")))
            write_row(str(board), make_row(f"{run}-{task}", f"{run}-{seed}", "completed", spec, result))
    view = study.ablation_view(seeds, ablations, ["sst2"], tmp_path / "view")
    assert sorted(p.name.split("--")[0] for p in view.rglob("*.parquet")) == sorted(
        ["study-best-kd-opdf-s0-sst2"] * 3 + ["study-kd-opdf-sst2-align-off-s0-sst2"] * 3
        + ["study-kd-opdf-sst2-dense-control-s0-sst2"] * 3)
    page = render(str(view), tmp_path / "report", by=("opdf_train_cores", "opdf_align_ratio", "opdf_align_weight"))
    md = page.with_suffix(".md").read_text()
    assert "| KD + OPDF (5 cores) [opdf_train_cores central] | " \
           "+1.2 ± 0.2 (3) gain (p " in md               # 80 + seed/10 against the control's 79
    # frozen auxiliary cores leave the alignment nothing to act on: its (default) weight is not named
    assert "| KD + OPDF (5 cores) [opdf_train_cores all, opdf_align_ratio 0.0, opdf_align_weight 0.0] | " \
           "-1.0 ± 0.0 (3) loss (p <0.001, Holm <0.001) | **loss** |" in md
    assert study.ablation_view(seeds, ablations, ["sst2"], view) == view               # rebuilt, not appended to
    assert len(list(view.rglob("*.parquet"))) == 9
    both = study.ablation_view(seeds, ablations, ["sst2", "mrpc"], tmp_path / "both")  # each task's best OPDF rows
    assert len(list(both.glob("task=mrpc/study-best-kd-opdf-s0-mrpc--*.parquet"))) == 3
    assert len(list(both.rglob("*.parquet"))) == 12


def test_the_panel_verdict_credits_opdf_only_beyond_the_best_cheaper_control(tmp_path):
    """Per seed the panel's arms share a teacher; OPDF is read against each arm and against the best of the cheap
    controls on each seed, Holm-adjusted together; a seed whose arms had different teachers is named."""
    import pandas as pd

    verdict = load("panel_verdict.py")
    dev = {"dense": 60.0, "opdf": 65.0, "l2sp": 64.5, "l2sp-fixed": 63.0, "central": 62.0, "block-last": 65.5,
           "lr1.5": 61.0, "lr2": 60.5, "align-off": 50.0}
    rows = [{"run_id": f"panel-{arm}-s{seed}-stsb", "seed": seed, "status": "completed", "teacher_dev_score": 78.0,
             "dev_score": value + seed * 0.1 + (0.3 * seed if arm == "l2sp" else 0.0)}
            for arm, value in dev.items() for seed in (1, 2, 3)]
    rows.append({"run_id": "panel-l2sp-grid-stsb", "seed": 0, "status": "completed", "teacher_dev_score": 70.0,
                 "dev_score": 99.0})                                       # the λ grid: not an arm
    csv = tmp_path / "panel.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    by_arm = verdict.scores(pd.read_csv(csv))
    assert set(by_arm) == set(dev) and sorted(by_arm["opdf"]) == [1, 2, 3]
    found = {r["label"]: r for r in verdict.verdict(by_arm)}
    assert found["opdf − dense"]["mean"] == pytest.approx(5.0)
    best = found["opdf − max(l2sp, l2sp-fixed, central, lr1.5, lr2)"]
    assert best["mean"] == pytest.approx(0.5 - 0.3 * 2)                   # l2sp, the best control on every seed
    assert found["block-last − opdf"]["mean"] == pytest.approx(0.5)
    assert all(r["p_holm"] >= r["p"] for r in found.values())
    assert verdict.teachers_agree(pd.read_csv(csv)) == []
    rows[0]["teacher_dev_score"] = 70.0
    pd.DataFrame(rows).to_csv(csv, index=False)
    assert verdict.teachers_agree(pd.read_csv(csv)) == [1]


def test_every_committed_step_rebuilds_its_leaderboard_with_every_row(tmp_path, monkeypatch):
    """A fresh checkout's study starts from the committed CSVs: rows older than schema 10 (no trial_task) included,
    none may be skipped as mislabelled (a skipped row reruns its search, and the next export loses it)."""
    import pandas as pd

    from opdf_ray.leaderboard import read_leaderboard

    study = load("run.py")
    for csv in sorted(study.RESULTS.glob("*.csv")):
        board = study.leaderboard_of(csv.stem, tmp_path)
        assert len(read_leaderboard(str(board))) == len(pd.read_csv(csv)), csv.name


def test_the_convergence_and_cola_steps_widen_only_what_they_are_for(tmp_path, monkeypatch):
    """panel-convergence: dense/opdf/l2sp at 10 epochs (max_epochs lifted) and on all of train (no sample cap);
    panel-cola: each arm's lr grid on seed 0, then every seed at the arm's best lr; all into the panel's rows."""
    import yaml

    study = load("run.py")
    calls = []
    monkeypatch.setattr(study, "SPACES", tmp_path)
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "kd-opdf-stsb.yaml").write_text(yaml.safe_dump({"fixed": {
        "method": "kd", "lr": 2e-4, "opdf_cores": 4, "opdf_align_map": "init", "opdf_align_ratio": 0.086}}))
    monkeypatch.setattr(study, "launch", lambda step, name, space, task, seed, storage, search, trials: calls.append(
        (step, name, yaml.safe_load(space.read_text()), task, seed, search, trials)))
    study.panel_convergence(tmp_path, [1])
    assert [c[1] for c in calls] == [f"panel-{arm}-{v}-s1" for v in ("e10", "full")
                                     for arm in ("dense", "opdf", "l2sp")]
    e10, full = calls[0], calls[3]
    assert e10[2]["epochs"] == {"stsb": 10} and e10[5] == {"sampler": "grid", "max_epochs": 10}
    assert full[2]["epochs"] == {"stsb": 3} and full[5] == {"sampler": "grid", "max_train_samples": None}
    assert all(c[0] == "panel" and c[2]["params"]["seed"]["choices"] == [1] for c in calls)
    calls.clear()
    monkeypatch.setattr(study, "best_value",
                        lambda storage, run_id, column: {"panel-opdf-lr-cola": 1e-4}.get(run_id, 4e-4))
    study.panel_cola(tmp_path, [1, 2])
    grids = [c for c in calls if c[1].endswith("-lr")]
    assert [c[1] for c in grids] == [f"panel-{arm}-lr" for arm in study.COLA_ARMS]
    assert all(c[3] == "cola" and c[4] == 0 and c[6] == 4 and "lr" not in c[2]["fixed"] for c in grids)
    seeds = [c for c in calls if not c[1].endswith("-lr")]
    assert [(c[1], c[2]["fixed"]["lr"]) for c in seeds[:5]] == [
        (f"panel-{arm}-s1", 1e-4 if arm == "opdf" else 4e-4) for arm in study.COLA_ARMS]
    assert study.budget("cola") == {"preset": "minilm", "max_epochs": 3, "max_length": 64, "max_train_samples": 2000}


def test_the_verdict_has_a_section_per_task_and_a_convergence_table(tmp_path):
    import pandas as pd

    verdict = load("panel_verdict.py")
    rows = [{"run_id": f"panel-{arm}-s{seed}-{task}", "task": task, "seed": seed, "status": "completed",
             "teacher_dev_score": 70.0 + (task == "cola"), "dev_score": 50.0 + seed + (arm == "opdf"),
             "best_step": 100, "steps": 100}
            for task in ("stsb", "cola") for arm in ("dense", "opdf") for seed in (1, 2)]
    rows += [{"run_id": f"panel-opdf-e10-s{seed}-stsb", "task": "stsb", "seed": seed, "status": "completed",
              "teacher_dev_score": 70.0, "dev_score": 60.0, "best_step": 250, "steps": 500} for seed in (1, 2)]
    page = verdict.report(pd.DataFrame(rows))
    assert "## STS-B" in page and "## CoLA" in page and "| dense | dev MCC |" not in page
    assert page.count("| opdf − dense | +1.0") == 2                      # each task its own comparison
    assert "| opdf | 10 epochs, 2,000 examples | 60.0 ± 0.0 | 0.50 ± 0.00 | 0 of 2 | 1, 2 |" in page
    assert "Teachers: every arm" in page and "seeds [" not in page       # the e10 rows are not arms
