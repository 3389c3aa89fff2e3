"""Entry point of the Ray Tune + Optuna distillation search: ``python tune_main.py --task rte``.

See ``python tune_main.py --help`` and ``opdf_ray/cli.py``.
"""

import sys

from opdf_ray.cli import main

if __name__ == "__main__":
    sys.exit(main())
