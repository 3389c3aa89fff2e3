"""Per run: its trials, its compute, and its best configuration as a search space that trains it again."""

from __future__ import annotations

import pandas as pd
import yaml

from opdf_ray.config import RunSpec, inert_settings
from opdf_ray.leaderboard import spec_of
from opdf_ray.text import markdown, shell_join

def run_summary(board: pd.DataFrame) -> str:
    """Per run: trials by status, compute, and the best configuration as YAML for ``search_spaces/``."""
    parts = []
    for run_id, part in board.groupby("run_id", observed=True):
        counts = part["status"].value_counts().to_dict()
        hours = part["wall_seconds"].fillna(0).sum() / 3600
        epochs = part["epochs_done"].fillna(0).sum()
        statuses = ", ".join(f"{k} {v}" for k, v in counts.items())
        lines = [f"### {markdown(run_id)}", "", f"- trials: {len(part)} ({statuses})",
                 f"- compute: {hours:.2f} trial-hours, {epochs:.0f} trial-epochs"]
        done = part[part["status"] == "completed"].dropna(subset=["selection_score"])
        if len(done):
            best = done.loc[done["selection_score"].idxmax()]
            lines += [f"- best trial {markdown(best['trial_id'])}: selection {best['selection_score']:.2f}, dev "
                      f"{best['dev_score']:.2f}", "", "Best configuration (a search space; more seeds: add them "
                      "to `seed`):", "", "```yaml", config_block(best), "```"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def config_block(row) -> str:
    """A row's configuration as a complete, typed search space: a grid over its seed (one trial) that trains the
    same configuration (the same ``config_id``) on the task and preset the first line names."""
    spec, defaults = spec_of(row), RunSpec().to_dict()
    inert = set(inert_settings(spec))          # cannot act for this task and method: not part of the configuration
    fixed = {k: spec[k] for k in RunSpec.hyperparameters()
             if k != "epochs" and k not in inert and (k == "method" or spec[k] != defaults[k])}
    space = {"fixed": fixed, "epochs": {spec["task"]: spec["epochs"]},
             "params": {"seed": {"type": "categorical", "choices": [spec["seed"]]}}}
    target = shell_join(arg for k in ("task", "preset", "teacher", "student") if spec[k] is not None
                        for arg in (f"--{k}", spec[k]))
    return (f"# config_id {row['config_id']}: opdf-ray search {target} --sampler grid --space THIS_FILE\n"
            + yaml.safe_dump(space, sort_keys=False).rstrip())

