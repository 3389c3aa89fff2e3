"""``python -m opdf_ray.report``."""

from opdf_ray.report import main

raise SystemExit(main())
