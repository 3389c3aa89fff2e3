"""The search, one room each: ``checks`` (pre-flight, before Ray), ``sizing`` (settings from flags and the
cluster), ``cluster`` (the local or joined Ray), ``tuner`` (Tune + Optuna + ASHA, the leaderboard rows), ``trial``
(what one trial runs) and ``execute`` (all of it for a parsed search). ``opdf_ray.cli`` only parses; the Python API
is ``opdf_ray.search``."""
