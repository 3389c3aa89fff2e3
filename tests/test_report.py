"""Reports: exact cells from a synthetic leaderboard, clear errors, and a real headless-Chromium render."""

import math
import os
import shutil
import subprocess

from pathlib import Path

import pytest

from rows import completed_result, stopped_result

from opdf_ray.config import RunSpec
from opdf_ray.leaderboard import make_row, read_leaderboard, write_row
from opdf_ray.report import (best_configs, build_table, main, majority_metrics, opdf_verdicts, paired_difference,
                             render, table_markdown)

ARTIFACTS = "outputs/ci-artifacts"


def put(root, trial, task, method, cores, seed, selection, dev, lr=1e-5, status="completed", run="run1",
        teacher=None, trainable=None, **hyperparameters):
    spec = RunSpec(task=task, method=method, opdf_cores=cores, seed=seed, lr=lr, **hyperparameters).to_dict()
    trainable = trainable or (26_800_000 if cores else 17_400_000)
    result = completed_result(task, selection, dev, trainable=trainable,
                              inference=17_400_000, curve=[[1.0, 50.0], [2.0, selection]], other_below=10,
                              teacher=teacher)
    if status != "completed":
        result = stopped_result(selection)
    write_row(str(root), make_row(run, trial, status, spec, result))


@pytest.fixture
def board(tmp_path):
    root = tmp_path / "board"
    put(root, "a1", "mrpc", "kd", 0, 1, selection=79, dev=80)            # KD config A, two seeds
    put(root, "a2", "mrpc", "kd", 0, 2, selection=81, dev=84)
    put(root, "b1", "mrpc", "kd", 0, 1, selection=85, dev=70, lr=3e-5)   # KD config B: best selection, worse dev
    put(root, "c1", "mrpc", "kd", 5, 1, selection=82, dev=86)            # KD + OPDF 5
    put(root, "c2", "mrpc", "kd", 5, 2, selection=82, dev=88)
    put(root, "d1", "mrpc", "prokt", 0, 1, selection=75, dev=78)
    put(root, "e1", "rte", "kd", 0, 1, selection=60, dev=61)
    put(root, "e2", "rte", "kd", 5, 1, selection=62, dev=58)
    put(root, "p1", "rte", "kd", 5, 1, selection=99, dev=99, lr=9e-5, status="pruned")   # never in the table
    return root


def test_table_cells_follow_the_selection_rule(board):
    table = build_table(read_leaderboard(str(board)))
    assert [c.label for c in table.columns] == ["MRPC F1", "MRPC Acc", "RTE"]
    rows = {r["label"]: r for r in table.rows}
    assert list(rows) == ["KD", "+ OPDF (5 cores)", "ProKT"]
    kd, opdf = rows["KD"]["cells"], rows["+ OPDF (5 cores)"]["cells"]
    assert kd["MRPC F1"] == (70.0, math.inf, 1)                  # config B wins on selection; one seed: no interval
    t_2seeds = 12.7062                                            # t(0.975, 1 df): 95% half-width = t·sd/√n
    assert opdf["MRPC F1"][0] == 87.0 and opdf["MRPC F1"][1] == pytest.approx(t_2seeds * 2 ** 0.5 / 2 ** 0.5,
                                                                               rel=1e-4) and opdf["MRPC F1"][2] == 2
    assert kd["Avg"][0] == pytest.approx(((70 + 60) / 2 + 61) / 2)   # per task mean of its metrics, then tasks
    assert opdf["Avg"][0] == pytest.approx(((87 + 77) / 2 + 58) / 2)
    assert "Avg" not in rows["ProKT"]["cells"]                    # ProKT has no RTE row: no average
    assert rows["+ OPDF (5 cores)"]["train_params"] == "26.8M" and rows["KD"]["inference_params"] == "17.4M"
    md = table_markdown(table)
    assert "| **87.0 ± 12.7 (2)** | **77.0 ± 12.7 (2)** | 58.0 (1) |" in md          # ± is a 95% interval, not sd
    assert "| KD | 70.0 (1) | 60.0 (1) | **61.0 (1)** | 63.0 | 17.4M | 17.4M |" in md


def test_parameter_counts_print_one_value_when_they_round_alike(tmp_path):
    root = tmp_path / "board"
    put(root, "m", "mrpc", "kd", 0, 1, 80, 80, trainable=17_400_770)      # 2-class head
    put(root, "s", "stsb", "kd", 0, 1, 80, 80, trainable=17_400_385)      # regression head: 385 fewer
    put(root, "o1", "mrpc", "kd", 5, 1, 80, 80, trainable=26_800_000)
    put(root, "o2", "stsb", "kd", 5, 1, 80, 80, trainable=30_100_000)
    rows = {r["label"]: r for r in build_table(read_leaderboard(str(root))).rows}
    assert rows["KD"]["train_params"] == "17.4M"
    assert rows["+ OPDF (5 cores)"]["train_params"] == "26.8M–30.1M"


def test_dev_rule_picks_the_papers_configuration(board):
    rows = {r["label"]: r for r in build_table(read_leaderboard(str(board)), select_by="dev").rows}
    mean, half, n = rows["KD"]["cells"]["MRPC F1"]
    assert (mean, n) == (82.0, 2) and half == pytest.approx(12.7062 * 8 ** 0.5 / 2 ** 0.5, rel=1e-4)


def test_majority_class_rows_come_from_the_glue_data():
    mrpc = majority_metrics("mrpc")                 # "equivalent" is 67% of train: F1 81.2, accuracy 68.4 on dev
    assert round(mrpc["dev_f1"], 1) == 81.2 and round(mrpc["dev_accuracy"], 1) == 68.4
    assert round(majority_metrics("sst2")["dev_accuracy"], 1) == 50.9
    assert majority_metrics("stsb") == {"dev_pearson": 0.0, "dev_spearman": 0.0}   # a constant: no correlation


def test_reference_rows_are_the_majority_class_and_each_distinct_finetuned_teacher(tmp_path):
    root = tmp_path / "board"
    for seed, teacher in ((1, {"f1": 88.0, "accuracy": 84.0}), (2, {"f1": 90.0, "accuracy": 86.0})):
        for trial, cores in (("dense", 0), ("opdf", 5)):        # two trials of one seed share its teacher
            put(root, f"{trial}{seed}", "mrpc", "kd", cores, seed, 80, 80 + seed, teacher=teacher)
    table = build_table(read_leaderboard(str(root)))
    majority, teacher = table.references
    assert majority["label"] == "Majority class" and round(majority["cells"]["MRPC F1"][0], 1) == 81.2
    assert teacher["cells"]["MRPC F1"] == (89.0, pytest.approx(12.7062, rel=1e-4), 2)   # sd √2, 2 seeds
    assert teacher["cells"]["MRPC Acc"][:1] == (85.0,) and teacher["cells"]["Avg"][0] == 87.0
    md = table_markdown(table)
    assert "| *Majority class* | 81.2 | 68.4 | 74.8 | – | – |" in md
    assert md.index("*Teacher (fine-tuned)*") < md.index("| KD |")
    assert "**89.0" not in md                                    # references are never the column's best


def test_paired_difference_and_its_verdict():
    gain = paired_difference({1: 81.0, 2: 83.2, 3: 85.0}, {1: 80.0, 2: 82.0, 3: 84.0})   # +1, +1.2, +1
    assert gain.mean == pytest.approx(3.2 / 3) and gain.seeds == 3
    assert gain.half_width == pytest.approx(4.3027 * 0.11547 / 3 ** 0.5, rel=1e-3) and gain.verdict == "gain"
    assert paired_difference({1: 70.0, 2: 71.0}, {1: 80.0, 2: 80.5}).verdict == "loss"
    noisy = paired_difference({1: 85.0, 2: 75.0, 3: 80.0}, {1: 80.0, 2: 80.0, 3: 80.0})
    assert noisy.verdict == "no gain or loss" and noisy.text() == "+0.0 ± 12.4 (3)" and noisy.p == 1.0
    assert gain.p == pytest.approx(0.00388, rel=1e-2)     # t = 1.0667 / (0.11547/√3) = 16.0, 2 df
    one = paired_difference({1: 90.0, 9: 1.0}, {1: 80.0})       # only seed 1 is paired; one seed has no noise
    assert one.seeds == 1 and one.verdict == "no gain or loss" and one.text() == "+10.0 (1 seed: no interval)"
    assert paired_difference({1: 90.0}, {2: 80.0}) is None


def test_verdicts_pair_seeds_per_task_and_over_tasks(tmp_path):
    root = tmp_path / "board"
    for seed, (mrpc, rte) in {1: (2.0, 1.0), 2: (1.0, 0.0), 3: (3.0, 1.0)}.items():
        put(root, f"md{seed}", "mrpc", "kd", 0, seed, 80, 80 + seed)
        put(root, f"mo{seed}", "mrpc", "kd", 5, seed, 80, 80 + seed + mrpc)
        put(root, f"rd{seed}", "rte", "kd", 0, seed, 60, 60 - seed)
        put(root, f"ro{seed}", "rte", "kd", 5, seed, 60, 60 - seed + rte)
    put(root, "pd1", "mrpc", "prokt", 0, 1, 80, 80)              # ProKT has no OPDF row: no verdict
    (kd,) = opdf_verdicts(best_configs(read_leaderboard(str(root))))
    assert kd["label"] == "KD + OPDF (5 cores)"
    assert kd["tasks"]["mrpc"].mean == pytest.approx(2.0) and kd["tasks"]["rte"].mean == pytest.approx(2 / 3)
    assert kd["overall"].mean == pytest.approx((1.5 + 0.5 + 2.0) / 3) and kd["overall"].seeds == 3


def test_pooled_cores_give_one_opdf_row_per_method_whatever_cores_each_task_chose(tmp_path):
    """Searches that chose their cores: each task's best OPDF configuration (6 cores on MRPC, 3 on RTE) pairs with
    the dense one in one row, so the method gets an all-tasks verdict; without pooling they are two rows."""
    root = tmp_path / "board"
    for seed, (mrpc, rte) in {1: (2.0, 1.0), 2: (1.0, 0.0), 3: (3.0, 1.0)}.items():
        put(root, f"md{seed}", "mrpc", "kd", 0, seed, 80, 80 + seed)
        put(root, f"mo{seed}", "mrpc", "kd", 6, seed, 81, 80 + seed + mrpc)
        put(root, f"mw{seed}", "mrpc", "kd", 4, seed, 79, 99)            # lower selection: not the arm's best
        put(root, f"rd{seed}", "rte", "kd", 0, seed, 60, 60 - seed)
        put(root, f"ro{seed}", "rte", "kd", 3, seed, 60, 60 - seed + rte)
    assert main([str(root), "--pool-cores", "--out", str(tmp_path / "pooled")]) == 0
    md = (tmp_path / "pooled" / "report.md").read_text()
    assert "| + OPDF (searched: 3, 6 cores) | **84.0 ± 4.3 (3)** |" in md        # MRPC F1: 80 + seed + Δ, not 99
    # three cells (MRPC, RTE, all tasks): p 0.074, 0.184, 0.094, Holm ×3, ×2 (kept monotone), ×1
    assert "| KD + OPDF (searched: 3, 6 cores) | +2.0 ± 2.5 (3) no gain or loss (p 0.074, Holm 0.223) | +0.7 ± 1.4 " \
           "(3) no gain or loss (p 0.184, Holm 0.223) | +1.3 ± 1.9 (3) (p 0.094, Holm 0.223) | **no gain or loss** |" in md
    assert (tmp_path / "pooled" / "dev_vs_cores.png").exists()                 # plotted at the true core counts
    page = render(str(root), tmp_path / "per-cores")
    labels = [line.split(" | ")[0] for line in page.with_suffix(".md").read_text().splitlines()
              if line.startswith("| KD + OPDF")]
    assert labels == ["| KD + OPDF (3 cores)", "| KD + OPDF (4 cores)", "| KD + OPDF (6 cores)"]


def test_an_ablation_compares_hyperparameter_values_across_leaderboards(tmp_path, capsys):
    main_board, ablations = tmp_path / "main", tmp_path / "ablations"
    for seed in (1, 2, 3):
        put(main_board, f"d{seed}", "mrpc", "kd", 0, seed, 80, 80 + seed)
        put(main_board, f"o{seed}", "mrpc", "kd", 5, seed, 80, 82 + seed)               # default alignment (1.0)
        put(main_board, f"s{seed}", "sst2", "kd", 0, seed, 80, 70)                      # another task: filtered
        put(ablations, f"a{seed}", "mrpc", "kd", 5, seed, 80, 81 + seed, opdf_align_weight=0.0)
        put(ablations, f"c{seed}", "mrpc", "kd", 3, seed, 80, 80 + seed + seed / 10)
        put(ablations, f"b{seed}", "mrpc", "kd", 5, seed, 80, 79 + seed, opdf_bond_dim=128)
    page = render([str(main_board), str(ablations)], tmp_path / "report", by=("opdf_align_weight",), tasks=["mrpc"])
    md = page.with_suffix(".md").read_text()
    table = md.split("## Does OPDF help?")[0]
    labels = [line.split(" | ")[0][2:] for line in table.splitlines() if line.startswith(("| KD", "| +"))]
    assert labels == ["KD", "+ OPDF (3 cores) [opdf_align_weight 1.0]",                   # dense: no OPDF knob
                      "+ OPDF (5 cores) [opdf_align_weight 0.0]", "+ OPDF (5 cores) [opdf_align_weight 1.0]",
                      "+ MPO compression (5 cores, bond 128) [opdf_align_weight 1.0]"]
    assert "SST-2" not in md and "one row per value of opdf_align_weight" in md
    assert "| KD + OPDF (5 cores) [opdf_align_weight 0.0] | +1.0 ± 0.0 (3) gain (p <0.001, Holm <0.001) |" in md
    assert "| KD + OPDF (3 cores) [opdf_align_weight 1.0] | +0.2 ± 0.2 (3) no gain or loss (p 0.074, Holm 0.074) " \
           "|" in md                                    # 0.1 .. 0.3; the largest of four p: Holm leaves it
    assert "| KD + MPO compression (5 cores, bond 128) [opdf_align_weight 1.0] | -1.0 ± 0.0 (3) loss (p <0.001" in md
    assert main([str(main_board), "--compare", "lr_typo", "--out", str(tmp_path / "o")]) == 2
    assert "--compare lr_typo: not a hyperparameter; allowed: " in capsys.readouterr().err
    assert main([str(main_board), "--tasks", "mrcp", "--out", str(tmp_path / "o")]) == 2
    assert "unknown task(s) ['mrcp']; allowed: cola, sst2" in capsys.readouterr().err


def test_empty_or_unfinished_leaderboards_give_a_clear_message(tmp_path, capsys):
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "no leaderboard at" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "has no rows yet" in capsys.readouterr().err
    put(tmp_path / "pruned", "p1", "rte", "kd", 0, 1, 50, 50, status="pruned")
    assert main([str(tmp_path / "pruned"), "--out", str(tmp_path / "o")]) == 2
    assert "no completed trials" in capsys.readouterr().err
    assert main([str(tmp_path / "pruned"), "--protocol", "dev", "--out", str(tmp_path / "o")]) == 2


def test_report_files_are_written_and_the_html_is_self_contained(board, tmp_path):
    page = render(str(board), tmp_path / "report")
    text = page.read_text()
    assert (tmp_path / "report" / "report.md").is_file()
    assert {p.name for p in (tmp_path / "report").glob("*.png")} >= {"dev_vs_cores.png", "lr_sensitivity.png",
                                                                      "learning_curves.png"}
    assert "data:image/png;base64," in text and "http://" not in text and "https://" not in text
    md = (tmp_path / "report" / "report.md").read_text()
    assert "fixed:" in md                                            # best config as paste-able YAML
    assert "## Does OPDF help?" in md and "| KD + OPDF (5 cores) |" in md and 'id="verdicts"' in text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("OPDF_REQUIRE_CHROMIUM"),
                    reason="chromium not installed (.ci/run installs Debian's chromium and requires it)")
def test_html_renders_the_table_in_headless_chromium(board, tmp_path):
    assert CHROMIUM, "OPDF_REQUIRE_CHROMIUM is set but no chromium binary was found"
    page = render(str(board), tmp_path / "report")
    url = page.resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert 'id="glue-table"' in dom.stdout and "<b>87.0 ± 12.7 (2)</b>" in dom.stdout   # a 95% interval
    shot = (tmp_path / "report.png").resolve()
    subprocess.run([CHROMIUM, *FLAGS, f"--screenshot={shot}", "--window-size=1200,1600", url],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
    from pathlib import Path

    artifacts = Path(__file__).resolve().parent.parent / ARTIFACTS
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, artifacts / "report-screenshot.png")


def test_a_seed_run_twice_is_one_seed_in_the_table_and_the_report_says_which_row_it_left_out(tmp_path):
    root = tmp_path / "board"
    put(root, "a1", "mrpc", "kd", 0, 1, selection=80, dev=80)
    put(root, "a2", "mrpc", "kd", 0, 2, selection=80, dev=84)
    put(root, "again", "mrpc", "kd", 0, 1, selection=80, dev=80, run="run2")   # seed 1 again, a later run
    mean, std, n = build_table(read_leaderboard(str(root))).rows[0]["cells"]["MRPC F1"]
    assert (mean, n) == (82.0, 2)                    # before: 81.3 over "3 seeds", seed 1 counted twice
    render(str(root), tmp_path / "out")
    assert "1 completed row(s) repeat a (configuration, seed) of a later row and are left out" in \
        (tmp_path / "out" / "report.md").read_text()


def test_the_best_configuration_block_loads_as_a_space_and_rebuilds_the_same_configuration(tmp_path):
    import yaml

    from opdf_ray.leaderboard import config_id
    from opdf_ray.report import config_block
    from opdf_ray.search_space import parse_space
    from opdf_ray.hpo.tuner import SearchSettings, grid_of, trial_spec

    spec = RunSpec(task="sst2", method="theseus", seed=2, epochs=2, max_train_samples=1000, max_length=64,
                   opdf_cores=5, opdf_core_lr="1.0", lr=3e-5, replacing_rate=0.4, init_classifier_to_zero=True)
    write_row(str(tmp_path / "b"), make_row("r", "t", "completed", spec.to_dict(), completed_result("sst2", 80, 81)))
    write_row(str(tmp_path / "b"), make_row("r", "u", "completed", spec.to_dict() | {"max_train_samples": None},
                                            completed_result("sst2", 70, 71)))     # a null: the column is float
    row = read_leaderboard(str(tmp_path / "b")).set_index("trial_id").loc["t"]
    block = config_block(row)
    assert "max_train_samples: 1000\n" in block and "method: theseus" in block and "--task sst2" in block
    space = parse_space(yaml.safe_load(block), "block")
    assert grid_of(space) == {"seed": [2]}
    settings = SearchSettings(name="n", storage=str(tmp_path), leaderboard=str(tmp_path / "b"))
    rebuilt = trial_spec(RunSpec(task="sst2", preset="minilm"), space, {"seed": 2}, settings)
    assert config_id(rebuilt.to_dict()) == row["config_id"] and rebuilt.seed == 2


@pytest.mark.parametrize("report", ["report.md", "ablations/report.md", "first-pass/report.md", "equal/report.md",
                                    "equal/searches/report.md", "equal/ablations/report.md"])
def test_every_block_of_the_committed_study_reports_rebuilds_its_configuration(report, tmp_path):
    """docs/study's reports print each run's best configuration: each block loads as a search space and the grid
    over it trains the configuration its header names (the same ``config_id``)."""
    import re

    import yaml

    from opdf_ray.leaderboard import config_id
    from opdf_ray.search_space import parse_space
    from opdf_ray.hpo.tuner import SearchSettings, trial_spec

    text = (Path(__file__).resolve().parent.parent / "docs" / "study" / report).read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) >= 3                     # one per run: 3 in the smallest (the equal-budget ablations)
    settings = SearchSettings(name="n", storage=str(tmp_path), leaderboard=str(tmp_path / "b"))
    for block in blocks:
        header = re.match(r"# config_id (\w+): opdf-ray search --task (\w+) --preset (\S+) --sampler grid", block)
        space = parse_space(yaml.safe_load(block), "block")
        (seed,) = next(p.choices for p in space.params if p.name == "seed")
        rebuilt = trial_spec(RunSpec(task=header[2], preset=header[3]), space, {"seed": seed}, settings)
        assert config_id(rebuilt.to_dict()) == header[1], block



def test_parameter_importances_do_not_depend_on_the_order_of_the_rows_or_the_process(tmp_path):
    """Committed reports are re-rendered from their CSVs, whose rows come back in any order: with tasks of equal
    size, the plot must still describe the same task, with the same bars in the same order in any process."""
    import subprocess
    import sys

    import numpy as np
    import pandas as pd

    from opdf_ray.report.plots import SEARCHED, param_importance

    rng = np.random.default_rng(0)
    lr, temperature = rng.uniform(1e-5, 1e-3, 24), rng.uniform(1, 4, 24)
    score = np.where(np.arange(24) < 12, 70 + 3 * temperature, 70 + 3 * np.log10(lr))    # mrpc: T; sst2: lr
    tied = {"temperature": temperature, "alpha_kd": temperature / 4, "warmup_ratio": temperature / 40,
            "replacing_rate": temperature / 8}                          # four knobs that move as one: equal importances
    board = pd.DataFrame({"status": "completed", "task": ["mrpc"] * 12 + ["sst2"] * 12, "lr": lr, **tied,
                          "selection_score": score + rng.normal(0, 0.1, 24)})
    board = board.reindex(columns=[*board.columns, *(p for p in SEARCHED if p not in board)])   # not searched: NaN
    first = list(param_importance(board).items())
    assert [name for name, _ in first[:4]] == sorted(tied) and first[0][1] == first[3][1] > 0.2   # mrpc's T; by name
    assert list(param_importance(board.iloc[::-1]).items()) == first
    shuffled = board.sample(frac=1, random_state=1)
    assert list(param_importance(shuffled).items()) == first          # a random forest (fANOVA) would differ
    board.to_csv(tmp_path / "board.csv", index=False)
    script = (f"import pandas as pd; from opdf_ray.report.plots import param_importance; "
              f"print(list(param_importance(pd.read_csv({str(tmp_path / 'board.csv')!r})).items()))")
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "7"})              # another order of Python's sets
    assert other.stdout.strip() == repr(first)


def test_a_row_aligned_by_a_gradient_ratio_does_not_name_the_raw_weight_it_never_reads():
    import pandas as pd

    from opdf_ray.report.tables import variant_label

    by = ("opdf_align_ratio", "opdf_align_weight")
    part = pd.DataFrame({"opdf_train_cores": ["all"] * 2, "opdf_align_cores": ["auxiliary"] * 2,
                         "opdf_align_ratio": [0.086, 0.086], "opdf_align_weight": [1.0, 1.0]})
    assert variant_label("kd", (4, 0, False, 0.086, 1.0), by, part=part) == "+ OPDF (4 cores) [opdf_align_ratio 0.086]"
    by_weight = part.assign(opdf_align_ratio=0.0)                       # a raw weight: it is the strength
    assert variant_label("kd", (4, 0, False, 0.0, 1.0), by, part=by_weight) == \
        "+ OPDF (4 cores) [opdf_align_ratio 0.0, opdf_align_weight 1.0]"


def test_a_searched_float_in_a_row_label_is_short_and_a_set_one_stays_as_given():
    from opdf_ray.report.tables import variant_label

    by = ("opdf_align_ratio", "opdf_align_weight")
    assert variant_label("kd", (4, 0, False, 0.08562913278818232, 1.0), by) == \
        "+ OPDF (4 cores) [opdf_align_ratio 0.0856, opdf_align_weight 1.0]"
    assert variant_label("kd", (4, 0, False, 0.0, 3e-05), by) == "+ OPDF (4 cores) [opdf_align_ratio 0.0, opdf_align_weight 3e-05]"


def test_the_dense_anchor_gets_its_own_rows_and_every_opdf_row_is_read_against_it(tmp_path):
    """L2-SP is the cheaper regulariser OPDF's init alignment resembles: a dense L2-SP student is its own table row
    (not a better dense configuration), and each OPDF row's verdict comes twice: against the dense student and
    against the dense L2-SP student."""
    root = tmp_path / "board"
    for seed in (1, 2, 3):
        put(root, f"d{seed}", "stsb", "kd", 0, seed, 60, 60 + seed)
        put(root, f"a{seed}", "stsb", "kd", 0, seed, 61, 63 + seed, l2sp_ratio=0.086)      # +3 over dense
        put(root, f"o{seed}", "stsb", "kd", 4, seed, 62, 62 + seed + seed / 10)           # +2.2 over dense
    assert main([str(root), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    labels = [line.split(" | ")[0][2:] for line in md.split("## Does OPDF help?")[0].splitlines()
              if line.startswith(("| KD", "| +"))]
    assert labels == ["KD", "+ L2-SP", "+ OPDF (4 cores)"]
    verdicts = md.split("## Does OPDF help?")[1]
    assert "| KD + L2-SP | +3.0 ± 0.0 (3) gain" in verdicts
    assert "| KD + OPDF (4 cores) | +2.2 ± 0.2 (3) gain" in verdicts
    assert "| KD + OPDF (4 cores) − L2-SP | -0.8 ± 0.2 (3) loss" in verdicts    # OPDF's gain is less than the anchor's


def test_a_methods_opdf_rows_stay_under_it_when_its_dense_trial_was_pruned_and_a_skipped_plot_says_why(tmp_path):
    """The quick start's report once printed Theseus + OPDF as a second "KD + OPDF" row when the dense Theseus
    trial was pruned, and dropped the importance plot without a word."""
    root = tmp_path / "board"
    put(root, "k0", "sst2", "kd", 0, 1, 77, 74)
    put(root, "k3", "sst2", "kd", 3, 1, 70, 68)
    put(root, "t0", "sst2", "theseus", 0, 1, 75, 0, status="pruned")
    put(root, "t3", "sst2", "theseus", 3, 1, 77, 74)
    assert main([str(root), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    labels = [line.split(" | ")[0][2:] for line in md.split("## Does OPDF help?")[0].splitlines()
              if line.startswith(("| KD", "| +", "| BERT"))]
    assert labels == ["KD", "+ OPDF (3 cores)", "BERT-of-Theseus (dense: 1 pruned)", "+ OPDF (3 cores)"]
    assert "| BERT-of-Theseus (dense: 1 pruned) | – | – | – | – |" in md
    assert "Not drawn — " in md and "param_importance: needs at least 4 completed trials" in md


def test_the_cores_plot_ticks_only_the_core_counts_that_ran(tmp_path, monkeypatch):
    """0 and 3 cores: two evenly spaced ticks labelled 0 and 3, no axis between them that suggests 1 or 2 ran."""
    import pandas as pd

    from opdf_ray.report import plots

    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    chosen = pd.DataFrame({"task": ["rte"] * 2, "method": ["kd"] * 2, "opdf_cores": [0, 3], "mpo_bond": [0, 0],
                           "dev_score": [60.0, 62.0]})
    assert plots.plot_cores(chosen, chosen, tmp_path / "cores.png") is not None
    ax = drawn["fig"].axes[0]
    assert list(ax.get_xticks()) == [0, 1] and [t.get_text() for t in ax.get_xticklabels()] == ["0", "3"]
    assert list(ax.lines[0].get_xdata()) == [0, 1]
