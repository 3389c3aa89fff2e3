"""Entry point of the Ray Tune + Optuna distillation search: ``python tune_main.py --task rte``.

The search (Ray Train workers, Optuna + ASHA, Parquet leaderboard) is not built yet; until it is, this script
says so instead of pretending. What exists today: ``python -m opdf_ray.demo`` (see README).
"""

import sys

if __name__ == "__main__":
    sys.exit("tune_main.py: the Ray Tune search is not implemented yet (planned: Ray Train workers, Optuna + ASHA, "
             "Parquet leaderboard). Available now: python -m opdf_ray.demo")
