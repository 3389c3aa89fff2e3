"""Distillation methods behind one interface (``base.Method``); chosen by name from the run spec."""

from opdf_ray.config import METHODS as METHOD_NAMES
from opdf_ray.methods.base import Method
from opdf_ray.methods.finetune import FineTune
from opdf_ray.methods.kd import KD
from opdf_ray.methods.lgtm import LGTM
from opdf_ray.methods.prokt import ProKT
from opdf_ray.methods.theseus import Theseus

METHODS: dict[str, type[Method]] = {m.name: m for m in (KD, ProKT, LGTM, Theseus, FineTune)}
if tuple(sorted(METHODS)) != tuple(sorted(METHOD_NAMES)):   # config.METHODS is the one list of names
    raise ImportError(f"method classes {sorted(METHODS)} do not match config.METHODS {sorted(METHOD_NAMES)}")


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHOD_NAMES)}")
    return METHODS[name]
