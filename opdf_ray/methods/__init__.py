"""Distillation methods behind one interface (``base.Method``); chosen by name from the run spec."""

from opdf_ray.methods.base import Method
from opdf_ray.methods.finetune import FineTune
from opdf_ray.methods.kd import KD
from opdf_ray.methods.lgtm import LGTM
from opdf_ray.methods.prokt import ProKT
from opdf_ray.methods.theseus import Theseus

METHODS: dict[str, type[Method]] = {m.name: m for m in (KD, ProKT, LGTM, Theseus, FineTune)}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[name]
