"""The multi-seed OPDF study (issue 10 §3), run with the product: searches (``opdf_ray.search``, what
``opdf-ray search`` runs; grids for the fixed configurations) that write Parquet leaderboards (committed as CSV),
rendered by ``python -m opdf_ray.report``.

    python benchmarks/study/run.py lr           # step 1: each method's student lr on the selection slice
    python benchmarks/study/run.py lr-opdf      # step 1b: the same for each method's OPDF-5 student
    python benchmarks/study/run.py main [--tasks sst2 mrpc stsb] [--seeds 1 2 3] [--methods kd theseus prokt lgtm]
    python benchmarks/study/run.py ablations [--task mrpc] [--seeds 1 2 3]
    python benchmarks/study/run.py report --out docs/study    # opdf_ray.report: main, first-pass/, ablations/
    python benchmarks/study/run.py panel [--seeds 5 6 7 8]      # issue 37's panel on STS-B (default seeds 1-8)
    python benchmarks/study/run.py panel-convergence            # dense/opdf/l2sp at 10 epochs and on all of train
    python benchmarks/study/run.py panel-cola                   # five arms on CoLA, each at its own lr

The equal-budget study (issue 23 §2): per task, method (KD, BERT-of-Theseus) and arm (dense, OPDF) one TPE + ASHA
search on seed 0, 16 trials of at most 3 epochs for both arms (``spaces/eq-*.yaml``), then each search's best
configuration re-run on seeds 1-3 (``spaces/best/``, written from the leaderboard):

    python benchmarks/study/run.py equal [--tasks sst2 mrpc stsb] [--methods kd theseus | prokt lgtm] [--arms dense opdf]
    python benchmarks/study/run.py equal-seeds [--tasks ...]
    python benchmarks/study/run.py equal-ablations --task sst2   # KD's best OPDF: alignment off, dense control
    python benchmarks/study/run.py equal-report --out docs/study   # docs/study/equal/: verdicts, searches/, ablations/

Each step has its own Parquet leaderboard under ``--storage`` (not committed) and its committed text copy
``benchmarks/study/results/<step>.csv`` (every leaderboard column, one row per trial), from which the leaderboard is
rebuilt on a fresh checkout; a report never mixes the lr search or the ablations into the main table. The OPDF
students train at their own lr (step 1b). ``results/first-pass.csv`` keeps, out of the main table, the rows of the
first pass that this made obsolete: OPDF students trained at the dense students' lr, and SST-2 rows whose teacher
was fine-tuned per method (before the seeding fix). The ablations report reads step 2's KD rows of the ablation
task with step 3's (the dense and default OPDF students are step 2's, same seeds, so the same data and teacher),
one row per alignment weight.
Budget (a 2-core CPU): minilm preset, 3 epochs, max length 64; SST-2 and STS-B on seeded subsets of 1,000 and 2,000
training examples per seed (the rest of train gives the selection slice), MRPC on its whole training split. A
call whose trials are all in the leaderboard is skipped and an interrupted one is resumed, so the study continues
across sessions without rerunning anything finished; a search interrupted in an earlier session (its rows in the
CSV, its Tune state gone with that machine) starts again.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SPACES = HERE / "spaces"
RESULTS = HERE / "results"                     # committed: <step>.csv
BUDGET = {"preset": "minilm", "max_epochs": 3, "max_length": 64}
# Seeded subsets where the whole split does not fit: SST-2 (67k sentences) and STS-B (5,174 pairs: about 3 h a seed
# here; at 2,000 its seed-1 teacher reaches dev Pearson 78.4 and a 3-epoch KD student 58.9, still rising). MRPC on its
# whole training split (minus the selection slice): at 1,000 pairs its teacher stayed at the majority class.
TRAIN_SAMPLES = {"sst2": 1000, "stsb": 2000, "cola": 2000}     # cola: issue 37's replication


def budget(task: str) -> dict:
    return BUDGET | {"max_train_samples": TRAIN_SAMPLES.get(task)}


LR_TASK, LR_SEED = "sst2", 0

# The equal-budget study (issue 23 §2): per method × task × arm one TPE + ASHA search on seed 0 with the same
# trials and epochs, evaluating at least 6 times a trial (SST-2 1,000 examples: 32 steps an epoch; MRPC 104;
# STS-B 2,000: 57), then each search's best configuration on seeds 1-3.
EQUAL_SEED, EQUAL_TRIALS, EQUAL_SEEDS = 0, 16, [1, 2, 3]
EVAL_STEPS = {"sst2": 16, "mrpc": 52, "stsb": 19}
ARMS = ("", "-opdf")                                   # eq-<method>.yaml (dense), eq-<method>-opdf.yaml


def equal_search(method: str, arm: str, task: str, storage: Path, trials: int) -> None:
    space = SPACES / f"eq-{method}{arm}.yaml"
    launch("equal", f"eq-{method}{arm}-s{EQUAL_SEED}", space, task, EQUAL_SEED, storage,
           {"sampler": "tpe", "num_samples": trials, "no_cover_cells": True,
            "settings": {"eval_steps": EVAL_STEPS[task]}}, trials)


def best_space(method: str, arm: str, task: str, storage: Path) -> Path:
    """The best configuration (by selection score) of a finished equal-budget search as a grid over seeds 1-3:
    the report's configuration block with its seed list widened, committed under ``spaces/best/``."""
    import yaml

    from opdf_ray.leaderboard import best_per_cell, read_leaderboard
    from opdf_ray.report import config_block

    board = read_leaderboard(str(leaderboard_of("equal", storage)))
    rows = board[board["run_id"] == f"eq-{method}{arm}-s{EQUAL_SEED}-{task}"]
    best = best_per_cell(rows)
    if best.empty:
        raise SystemExit(f"no completed trial of eq-{method}{arm} on {task} yet: run the 'equal' step first")
    row = rows[rows["trial_id"] == best["trial_id"].iloc[0]].iloc[0]
    header, body = config_block(row).split("\n", 1)
    space = yaml.safe_load(body)
    space["params"]["seed"]["choices"] = EQUAL_SEEDS
    for key in BUDGET.keys() | {"max_train_samples"}:          # the budget the driver passes (the same values)
        space["fixed"].pop(key, None)
    out = SPACES / "best" / f"{method}{arm}-{task}.yaml"
    out.parent.mkdir(exist_ok=True)
    out.write_text(f"{header}\n# the best of {len(rows)} trials of eq-{method}{arm} on {task} (seed {EQUAL_SEED}): "
                   f"trial {row['trial_id']}, selection {row['selection_score']:.2f}; re-run on seeds "
                   f"{EQUAL_SEEDS}\n" + yaml.safe_dump(space, sort_keys=False))
    return out


def ablation_spaces(task: str) -> list[Path]:
    """Issue 23 §2's ablations of KD's best OPDF configuration on ``task`` (``spaces/best/kd-opdf-<task>.yaml``,
    written by equal-seeds), as grids over seeds 1-3: **align-off**, every core trained and nothing pulling the
    auxiliary ones; **dense-control**, the same configuration without OPDF, whose matrices step as the OPDF ones
    did: at κ_m × lr (``dense_lr_as_cores``) where the cores took the dense lr (``opdf_core_lr 1.0``), at lr where
    they were matched (a matched core lr moves each deployed matrix as a dense step would)."""
    import copy

    import yaml

    best = SPACES / "best" / f"kd-opdf-{task}.yaml"
    if not best.exists():
        raise SystemExit(f"{best} is missing: run 'equal-seeds' first (it writes each search's best configuration)")
    header = best.read_text().split("\n", 1)[0]
    space = yaml.safe_load(best.read_text())
    fixed = space["fixed"]
    align_off = copy.deepcopy(space)
    for key in ("opdf_align_map", "opdf_align_ratio", "opdf_train_cores"):
        align_off["fixed"].pop(key, None)
    align_off["fixed"] |= {"opdf_align_weight": 0.0, "opdf_align_ratio": 0.0}
    dense = copy.deepcopy(space)
    dense["fixed"] = {k: v for k, v in fixed.items() if not k.startswith("opdf")}
    if str(fixed.get("opdf_core_lr", "matched")) != "matched":
        dense["fixed"]["dense_lr_as_cores"] = int(fixed["opdf_cores"])
    out = []
    for variant, body in (("align-off", align_off), ("dense-control", dense)):
        path = SPACES / "best" / f"kd-opdf-{task}-{variant}.yaml"
        path.write_text(f"# ablation '{variant}' of {best.name} ({header.lstrip('# ').split(':')[0]})\n"
                        + yaml.safe_dump(body, sort_keys=False))
        out.append(path)
    return out


# Issue 37's panel: what KD + OPDF-4's STS-B gain is made of. The winner's settings (spaces/best/kd-opdf-stsb.yaml)
# and its controls, seeds 1-8, every arm on each seed's one teacher (run ids panel-<arm>-s<seed>-stsb):
PANEL_TASK, PANEL_SEEDS, PANEL_GRID_SEED = "stsb", list(range(1, 9)), 0
# l2sp-fixed's λ: the best of these by selection score on seed 0. The ratio arm's effective λ (the l2sp_weight it
# re-chooses every step for ‖∇ pull‖ / ‖∇ rest‖ = 0.086) went 1.1e3 → 9.1e3 over a seed-0 run (docs/study/panel/)
PANEL_L2SP_WEIGHTS = [300.0, 1000.0, 3000.0, 10000.0]


def panel_spaces(weight: float | None = None) -> dict[str, dict]:
    """Each panel arm as a search space over ``PANEL_SEEDS`` (``weight``: l2sp-fixed's λ; None leaves that arm out):
    dense (the control), opdf (the winner), l2sp / l2sp-fixed (the dense anchor by ratio / by a fixed λ), central
    (OPDF-4 training its central cores only), block-last (aligned to the teacher's 2i+1 layers, not the student's
    own start), lr1.5 / lr2 (dense at 1.5× and 2× the lr: a larger step), align-off (OPDF-4 without alignment)."""
    import yaml

    best = yaml.safe_load((SPACES / "best" / f"kd-opdf-{PANEL_TASK}.yaml").read_text())["fixed"]
    dense = {k: v for k, v in best.items() if not k.startswith("opdf")}
    no_align = {k: v for k, v in best.items() if not k.startswith("opdf_align")}
    ratio = best["opdf_align_ratio"]
    arms = {"dense": dense, "opdf": best, "l2sp": dense | {"l2sp_ratio": ratio},
            "central": no_align | {"opdf_train_cores": "central"},
            "block-last": best | {"opdf_align_map": "block-last"},
            "lr1.5": dense | {"lr": 1.5 * dense["lr"]}, "lr2": dense | {"lr": 2 * dense["lr"]},
            "align-off": no_align | {"opdf_align_weight": 0.0, "opdf_align_ratio": 0.0}}
    if weight is not None:
        arms["l2sp-fixed"] = dense | {"l2sp_weight": weight}
    return {arm: {"fixed": fixed, "epochs": {PANEL_TASK: 3}, "params": {"seed": {"type": "categorical",
                                                                                 "choices": PANEL_SEEDS}}}
            for arm, fixed in arms.items()}


def panel_space_file(name: str, space: dict) -> Path:
    import yaml

    path = SPACES / "panel" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"# issue 37's panel arm '{name}' (written by benchmarks/study/run.py panel)\n"
                    + yaml.safe_dump(space, sort_keys=False))
    return path


def panel_l2sp_weight(storage: Path) -> float | None:
    """l2sp-fixed's λ: the best of ``PANEL_L2SP_WEIGHTS`` by selection score on seed 0 (None: the grid is not done)."""
    from opdf_ray.leaderboard import read_leaderboard

    board = leaderboard_of("panel", storage)
    if not board.exists():
        return None
    rows = read_leaderboard(str(board))
    rows = rows[(rows["run_id"] == f"panel-l2sp-grid-{PANEL_TASK}") & (rows["status"] == "completed")]
    if len(rows) < len(PANEL_L2SP_WEIGHTS):
        return None
    return float(rows.loc[rows["selection_score"].idxmax(), "l2sp_weight"])


def panel(storage: Path, seeds: list[int]) -> None:
    """The λ grid on seed 0, then every arm on each seed in turn (seed-major: each finished seed is a complete
    paired replicate of all arms)."""
    dense = panel_spaces()["dense"]
    grid_space = {"fixed": dense["fixed"], "epochs": dense["epochs"],
                  "params": {"seed": {"type": "categorical", "choices": [PANEL_GRID_SEED]},
                             "l2sp_weight": {"type": "categorical", "choices": PANEL_L2SP_WEIGHTS}}}
    launch("panel", "panel-l2sp-grid", panel_space_file("l2sp-grid", grid_space), PANEL_TASK, PANEL_GRID_SEED,
           storage, {"sampler": "grid"}, len(PANEL_L2SP_WEIGHTS))
    for seed in seeds:
        for arm, space in panel_spaces(panel_l2sp_weight(storage)).items():
            one = space | {"params": {"seed": {"type": "categorical", "choices": [seed]}}}
            launch("panel", f"panel-{arm}-s{seed}", panel_space_file(f"{arm}-s{seed}", one), PANEL_TASK, seed,
                   storage, {"sampler": "grid"}, 1)


# Issue 37's convergence check: is OPDF faster, better, or both? dense, opdf and l2sp at 10 epochs, and at 3 epochs on
# the whole STS-B training split (minus the selection slice), seeds 1-4; each row's best_step says where it peaked
CONVERGENCE_ARMS, CONVERGENCE_SEEDS = ("dense", "opdf", "l2sp"), [1, 2, 3, 4]
CONVERGENCE = {"e10": ({"max_epochs": 10}, 10), "full": ({"max_train_samples": None}, 3)}   # budget, epochs


def panel_convergence(storage: Path, seeds: list[int]) -> None:
    """The convergence runs, seed-major: run ids ``panel-<arm>-<e10|full>-s<seed>-stsb``."""
    arms = panel_spaces()
    for seed in seeds:
        for variant, (widened, epochs) in CONVERGENCE.items():
            for arm in CONVERGENCE_ARMS:
                one = arms[arm] | {"epochs": {PANEL_TASK: epochs},
                                   "params": {"seed": {"type": "categorical", "choices": [seed]}}}
                name = f"panel-{arm}-{variant}-s{seed}"
                launch("panel", name, panel_space_file(f"{arm}-{variant}-s{seed}", one), PANEL_TASK, seed, storage,
                       {"sampler": "grid"} | widened, 1)


# Issue 37's replication on CoLA (MCC; 2,000 training examples, 3 epochs): five arms, each at its own lr picked by
# selection score from this grid on seed 0, then seeds 1-5 (run ids panel-<arm>-lr-cola, panel-<arm>-s<seed>-cola)
COLA_TASK, COLA_ARMS, COLA_SEEDS = "cola", ("dense", "opdf", "l2sp", "central", "block-last"), [1, 2, 3, 4, 5]
COLA_LRS = [5e-5, 1e-4, 2e-4, 4e-4]


def panel_cola(storage: Path, seeds: list[int]) -> None:
    """Each arm's lr grid on seed 0, then every arm on each seed at its lr (seed-major)."""
    arms = {arm: panel_spaces()[arm] | {"epochs": {COLA_TASK: 3}} for arm in COLA_ARMS}
    lrs = {}
    for arm, space in arms.items():
        grid_space = space | {"fixed": {k: v for k, v in space["fixed"].items() if k != "lr"},
                              "params": {"seed": {"type": "categorical", "choices": [PANEL_GRID_SEED]},
                                         "lr": {"type": "categorical", "choices": COLA_LRS}}}
        launch("panel", f"panel-{arm}-lr", panel_space_file(f"{arm}-lr-cola", grid_space), COLA_TASK,
               PANEL_GRID_SEED, storage, {"sampler": "grid"}, len(COLA_LRS))
        lrs[arm] = best_value(storage, f"panel-{arm}-lr-{COLA_TASK}", "lr")
    for seed in seeds:
        for arm, space in arms.items():
            one = space | {"fixed": space["fixed"] | {"lr": lrs[arm]},
                           "params": {"seed": {"type": "categorical", "choices": [seed]}}}
            launch("panel", f"panel-{arm}-s{seed}", panel_space_file(f"{arm}-s{seed}-cola", one), COLA_TASK, seed,
                   storage, {"sampler": "grid"}, 1)


def best_value(storage: Path, run_id: str, column: str):
    """``column`` of the completed row of ``run_id`` with the best selection score."""
    from opdf_ray.leaderboard import read_leaderboard

    rows = read_leaderboard(str(leaderboard_of("panel", storage)))
    rows = rows[(rows["run_id"] == run_id) & (rows["status"] == "completed")]
    if rows.empty:
        raise SystemExit(f"{run_id} has no completed trial: run the step again")
    return rows.loc[rows["selection_score"].idxmax(), column].item()


def equal_report(out: Path, storage: Path) -> None:
    """Issue 23 §2's reports under ``out``: the OPDF − dense verdicts from the seed re-runs, one OPDF row per method
    (each task's searched best, whatever its cores); ``searches/``, each search's best trial and its cost in
    trial-epochs; ``ablations/``, KD's best OPDF configuration against its ablations on every task that has them."""
    seeds = leaderboard_of("equal-seeds", storage)
    if seeds.exists():
        report(seeds, "--pool-cores", "--out", out)
    report(leaderboard_of("equal", storage), "--pool-cores", "--out", out / "searches")
    ablations = leaderboard_of("equal-ablations", storage)
    if seeds.exists() and ablations.exists():
        tasks = sorted(folder.name.split("=", 1)[1] for folder in ablations.glob("task=*"))
        view = ablation_view(seeds, ablations, tasks, storage / "leaderboards" / "equal-ablations-view")
        report(view, "--compare", "opdf_train_cores", "opdf_align_ratio", "opdf_align_weight", "--out", out / "ablations")


def report(*args) -> None:
    """``python -m opdf_ray.report`` with these arguments; its one-line error ends the step (no traceback here)."""
    done = subprocess.run([sys.executable, "-m", "opdf_ray.report", *map(str, args)], cwd=REPO)
    if done.returncode:
        raise SystemExit(f"the report of {args[0]} failed (above)")


def ablation_view(seeds: Path, ablations: Path, tasks: list[str], view: Path) -> Path:
    """A leaderboard of KD's best OPDF configuration on each of ``tasks`` (its seed re-runs) and its ablations,
    nothing else: its dense row is the dense control (the same settings without OPDF), not the dense search's best.
    Rebuilt from the two leaderboards' row files at every call."""
    import shutil

    shutil.rmtree(view, ignore_errors=True)
    rows = []
    for task in tasks:
        rows += seeds.glob(f"task={task}/study-best-kd-opdf-s{EQUAL_SEED}-{task}--*.parquet")
        rows += ablations.glob(f"task={task}/*.parquet")
    for row in rows:
        (view / row.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(row, view / row.parent.name / row.name)
    return view


def grid_size(space: Path) -> int:
    from opdf_ray.search_space import load_space
    from opdf_ray.hpo.tuner import grid_of

    return math.prod(len(c) for c in grid_of(load_space(space)).values())


def leaderboard_of(step: str, storage: Path) -> Path:
    """Step ``step``'s Parquet leaderboard, rebuilt from its committed CSV when it is not there yet."""
    board, csv = storage / "leaderboards" / step, RESULTS / f"{step}.csv"
    if not board.exists() and csv.exists():
        import pandas as pd

        from opdf_ray.leaderboard import ROW_TASK, SCHEMA, write_row

        kinds = {f.name: f.type for f in SCHEMA}
        for record in pd.read_csv(csv).to_dict("records"):
            row = {k: None if pd.isna(v) else v for k, v in record.items() if k in kinds}
            row[ROW_TASK] = row.get(ROW_TASK) or row["task"]   # rows older than schema 10 did not store it
            for k, v in row.items():
                if v is not None and pa_is(kinds[k], "timestamp"):
                    row[k] = pd.Timestamp(v).to_pydatetime()
                elif v is not None and pa_is(kinds[k], "integer"):
                    row[k] = int(v)
                elif v is not None and pa_is(kinds[k], "boolean"):
                    row[k] = v in (True, "True", "true")
            write_row(str(board), row)
    return board


def pa_is(kind, what: str) -> bool:
    import pyarrow.types as t

    return {"timestamp": t.is_timestamp, "integer": t.is_integer, "boolean": t.is_boolean}[what](kind)


def export(board: Path, step: str) -> None:
    """The committed text copy of a step's leaderboard."""
    from opdf_ray.leaderboard import read_leaderboard

    RESULTS.mkdir(exist_ok=True)
    frame = read_leaderboard(str(board)).sort_values(["task", "run_id", "trial_id"])
    frame.to_csv(RESULTS / f"{step}.csv", index=False)


def finished_rows(leaderboard: Path, run_id: str) -> tuple[int, bool]:
    """(finished rows of ``run_id`` in the leaderboard, whether it has any rows at all)."""
    if not leaderboard.exists():
        return 0, False
    from opdf_ray.leaderboard import read_leaderboard

    board = read_leaderboard(str(leaderboard))
    if board.empty:
        return 0, False
    rows = board[board["run_id"] == run_id]
    return int((rows["status"] != "failed").sum()), len(rows) > 0


def grid(step: str, space_name: str, task: str, seed: int, storage: Path, space: Path | None = None) -> None:
    space = space or SPACES / f"{space_name}.yaml"
    if "LR_PENDING" in space.read_text():
        raise SystemExit(f"{space} still says LR_PENDING: run step 1 (lr) and copy the chosen lr into it")
    launch(step, f"study-{space_name}-s{seed}", space, task, seed, storage, {"sampler": "grid"}, grid_size(space))


def launch(step: str, name: str, space: Path, task: str, seed: int, storage: Path, search: dict,
           trials: int) -> None:
    """One search (``opdf_ray.search``, what ``opdf-ray search`` runs) writing step ``step``'s leaderboard: skipped
    when its ``trials`` rows are there, resumed when some are."""
    import opdf_ray

    leaderboard = leaderboard_of(step, storage)
    done, started = finished_rows(leaderboard, f"{name}-{task}")
    if done >= trials:
        print(f"skip {name} on {task}: all {done} trials are in the leaderboard", flush=True)
        return
    if started and not (storage / f"{name}-{task}").exists():
        # rows of a search interrupted in an earlier session (from the committed CSV) whose Tune state is gone:
        # a search cannot resume from rows alone, so it starts again and its old rows go
        old = list(leaderboard.glob(f"task={task}/{name}-{task}--*.parquet"))
        for path in old:
            path.unlink()
        print(f"{name} on {task}: {len(old)} rows of an interrupted search with no Tune state here; starting it "
              f"again", flush=True)
        started = False
    options = dict(space=str(space), seed=seed, name=name, storage=str(storage), leaderboard=str(leaderboard),
                   max_concurrent=1, resume=started) | budget(task) | search      # a step may widen the budget
    print(f"+ opdf_ray.search({task!r}, **{options})", flush=True)
    try:
        outcome = opdf_ray.search(task, **options)
    finally:
        export(leaderboard, step)                    # what finished is committed, even after an interruption
    if outcome.failed:
        raise SystemExit(f"{name} on {task}: the search stopped early (see above)")
    done, _ = finished_rows(leaderboard, f"{name}-{task}")
    if done < trials:        # interrupted (Ctrl-C returns from the search): keep its checkpoints for the resume
        raise SystemExit(f"{name} on {task}: {done} of {trials} trials finished; run the step again to resume it")
    freed = drop_checkpoints(storage / f"{name}-{task}")
    print(f"{name} on {task}: done; deleted its trials' checkpoints ({freed / 2**30:.1f} GiB)", flush=True)


def drop_checkpoints(experiment: Path) -> int:
    """Delete the trial checkpoints of a finished grid and return the bytes freed. The study keeps rows, not
    students (up to 2 GiB a grid: several sessions of them filled the disk); an unfinished grid keeps its own,
    since ``--resume`` continues from them."""
    import shutil

    freed = 0
    for checkpoint in experiment.glob("train/*/checkpoint_*"):
        if not checkpoint.is_dir():                  # Ray Train's checkpoint_manager_snapshot.json stays
            continue
        freed += sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
        shutil.rmtree(checkpoint)
    return freed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["lr", "lr-opdf", "main", "ablations", "report", "equal", "equal-seeds",
                                    "equal-ablations", "equal-report", "panel", "panel-convergence", "panel-cola"])
    p.add_argument("--out", default=str(REPO / "docs" / "study"), help="report: where it goes")
    p.add_argument("--tasks", nargs="+", default=["sst2", "mrpc", "stsb"])
    p.add_argument("--task", default=None,
                   help="ablations: the task (its step-2 KD rows are the baselines; default mrpc); equal-ablations: "
                        "KD's best OPDF configuration's task (default sst2)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--methods", nargs="+", default=None,
                   help="default: kd theseus prokt lgtm (equal, equal-seeds: kd theseus)")
    p.add_argument("--arms", nargs="+", default=["dense", "opdf"], choices=["dense", "opdf"],
                   help="equal, equal-seeds: which arms")
    p.add_argument("--trials", type=int, default=EQUAL_TRIALS, help="equal: trials per search")
    p.add_argument("--storage", default=str(REPO / "outputs" / "study"), help="Tune experiments (not committed)")
    a = p.parse_args()
    a.task = a.task or ("sst2" if a.step.startswith("equal") else "mrpc")
    storage = Path(a.storage)
    arms = [ARMS[["dense", "opdf"].index(arm)] for arm in a.arms]
    if a.step in ("equal", "equal-seeds"):
        for task in a.tasks:                      # task-major: every finished task is a complete comparison
            for method in a.methods or ["kd", "theseus"]:
                for arm in arms:
                    if a.step == "equal":
                        equal_search(method, arm, task, storage, a.trials)
                    else:
                        grid("equal-seeds", f"best-{method}{arm}", task, 0, storage,
                             best_space(method, arm, task, storage))
        return
    if a.step == "equal-ablations":               # on --task: KD's best OPDF configuration, its ablations
        for space in ablation_spaces(a.task):
            grid("equal-ablations", space.stem, a.task, 0, storage, space)
        return
    if a.step == "equal-report":
        equal_report(Path(a.out) / "equal", storage)
        return
    if a.step == "panel":                         # issue 37: --seeds 1 2 … (default 1-8)
        panel(storage, a.seeds if a.seeds != [1, 2, 3] else PANEL_SEEDS)
        return
    if a.step == "panel-convergence":             # default seeds 1-4
        panel_convergence(storage, a.seeds if a.seeds != [1, 2, 3] else CONVERGENCE_SEEDS)
        return
    if a.step == "panel-cola":                    # default seeds 1-5
        panel_cola(storage, a.seeds if a.seeds != [1, 2, 3] else COLA_SEEDS)
        return
    a.methods = a.methods or ["kd", "theseus", "prokt", "lgtm"]
    if a.step in ("lr", "lr-opdf"):               # both write the lr leaderboard (results/lr.csv)
        for space in (a.step, f"{a.step}-theseus"):
            grid("lr", space, LR_TASK, LR_SEED, storage)
    elif a.step == "main":
        for seed in a.seeds:                      # seed-major: every finished seed is a complete replicate
            for task in a.tasks:
                for method in a.methods:          # dense at step 1's lr, OPDF-5 at step 1b's
                    grid("main", method, task, seed, storage)
                    if (SPACES / f"{method}-opdf.yaml").exists():      # Theseus: one lr, one grid for both
                        grid("main", f"{method}-opdf", task, seed, storage)
    elif a.step == "report":
        board = leaderboard_of("main", storage)
        report(board, "--out", a.out)
        first = leaderboard_of("first-pass", storage)
        if first.exists():                        # the record of the obsolete first pass, apart from the study
            report(first, "--out", Path(a.out) / "first-pass")
        ablations = leaderboard_of("ablations", storage)
        if ablations.exists():
            report(board, ablations, "--tasks", a.task, "--methods", "kd", "--compare", "opdf_align_weight", "--out",
                   Path(a.out) / "ablations")
    else:
        for seed in a.seeds:
            for space in ("ablation-cores", "ablation-align", "ablation-bond"):
                grid("ablations", space, a.task, seed, storage)


if __name__ == "__main__":
    main()
