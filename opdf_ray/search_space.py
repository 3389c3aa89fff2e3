"""Search spaces: a YAML file (``search_spaces/*.yaml``) validated into an Optuna define-by-run function.

Layout of a space file (every key is checked; an unknown key, a bad range or a wrong type is a ``ValueError``
naming the key, the value and what is allowed, before Ray starts)::

    fixed:  {max_length: 128, batch_size: 32}      # RunSpec fields every trial shares
    epochs: {default: 3, rte: 10}                  # per task (``--max-epochs`` caps it)
    params:                                        # sampled in this order (define-by-run)
      method: {type: categorical, choices: [kd, prokt, lgtm, theseus]}
      opdf:   {type: categorical, choices: [true, false]}       # pseudo-parameter: OPDF on/off
      lr:     {type: loguniform, low: 5.0e-7, high: 1.0e-4}
      teacher_lr: {type: loguniform, low: 1.0e-6, high: 1.0e-4, when: {method: [prokt, lgtm]}}
      opdf_cores: {type: int, low: 3, high: 7, when: {opdf: [true]}}
      opdf_align_weight: {type: loguniform, low: 0.01, high: 100, include_zero: true, when: {opdf: [true]}}

Parameter types: ``loguniform``/``uniform`` (``low``, ``high``), ``int`` (``low``, ``high``, optional ``step``),
``categorical`` (``choices``; ``null`` allowed). ``include_zero`` adds a ``<name>_is_zero`` switch so 0 (the
ablation) can be drawn next to a log-uniform range. ``when`` makes a parameter conditional on earlier ones.
A parameter a trial does not draw keeps the ``fixed`` value or the RunSpec default; ``opdf: false`` means
``opdf_cores = 0``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import yaml

from opdf_ray import shipped_path
from opdf_ray.config import (EXECUTION, INT_MOST, TARGET, RunSpec, UniqueKeyLoader, inert_settings, typed_value,
                             yaml_problem)
from opdf_ray.text import quoted

TYPES = ("loguniform", "uniform", "int", "categorical")
TOP_KEYS = ("fixed", "epochs", "params")
PARAM_KEYS = {"type", "low", "high", "step", "choices", "when", "include_zero"}
SPEC_FIELDS = {f.name: f for f in dataclasses.fields(RunSpec)}
PSEUDO = ("opdf",)
NOT_SEARCHABLE = RunSpec.fields_with_role(TARGET, EXECUTION)   # set on the command line
FIXED_EXECUTION = ("log_steps",)      # the one execution setting a space may fix: how often trials log
EPOCHS_HINT = "epochs are set per task in the top-level 'epochs:' section (capped by --max-epochs)"


def _fail(where: str, problem: str) -> None:
    raise ValueError(f"search space {where}: {problem}")


def _number(where: str, value, integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(value):
        _fail(where, f"{quoted(value)} is not {'an int' if integer else 'a finite number'}")
    return value


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: int | None = None
    choices: tuple | None = None
    when: tuple[tuple[str, tuple], ...] = ()
    include_zero: bool = False

    def active(self, drawn: dict) -> bool:
        return all(drawn.get(name) in values for name, values in self.when)

    def suggest(self, trial):
        """Draw this parameter on an Optuna trial (or Ray's captor of one)."""
        if self.include_zero and trial.suggest_categorical(f"{self.name}_is_zero", [False, True]):
            return 0.0
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1)
        return trial.suggest_float(self.name, self.low, self.high, log=self.type == "loguniform")


def _parse_param(name: str, raw, earlier: dict[str, Param]) -> Param:
    where = f"params.{name}"
    if name == "epochs":
        _fail(where, f"epochs cannot be searched: {EPOCHS_HINT}")
    if name not in SPEC_FIELDS and name not in PSEUDO:
        _fail(where, f"unknown parameter; allowed: RunSpec fields ({', '.join(sorted(SPEC_FIELDS))}) or "
                     f"{', '.join(PSEUDO)}")
    if name in NOT_SEARCHABLE:
        _fail(where, f"{name} cannot be searched (set it on the command line); not searchable: "
                     f"{', '.join(NOT_SEARCHABLE)}")
    if not isinstance(raw, dict):
        _fail(where, f"expected a mapping like {{type: loguniform, low: 1e-5, high: 1e-4}}, got {quoted(raw)}")
    unknown = sorted(set(raw) - PARAM_KEYS)
    if unknown:
        _fail(where, f"unknown key(s) {unknown}; allowed: {', '.join(sorted(PARAM_KEYS))}")
    kind = raw.get("type")
    if kind not in TYPES:
        _fail(f"{where}.type", f"{quoted(kind)} is not one of {', '.join(TYPES)}")
    low = high = step = choices = None
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            _fail(f"{where}.choices", f"expected a non-empty list, got {quoted(choices)}")
        if name in SPEC_FIELDS:                    # YAML reads 1e-4 as text: read it as the setting's type
            declared = SPEC_FIELDS[name].metadata.get("type") or type(SPEC_FIELDS[name].default)
            choices = [typed_value(name, c, f"search space {where}.choices:")
                       if isinstance(c, str) and declared is not str else c for c in choices]
        repeated = sorted({repr(c) for c in choices if choices.count(c) > 1})
        if repeated:
            _fail(f"{where}.choices", f"{', '.join(repeated)} given more than once (a repeated choice is drawn more "
                                      f"often); list each once")
        choices = tuple(choices)
        extra = sorted(k for k in ("low", "high", "step") if k in raw)
        if extra:
            _fail(where, f"{extra} do not apply to a categorical parameter")
    else:
        if "choices" in raw:
            _fail(where, f"'choices' applies only to categorical parameters, not {kind}")
        for key in ("low", "high"):
            if key not in raw:
                _fail(where, f"a {kind} parameter needs '{key}'")
        low = _number(f"{where}.low", raw["low"], kind == "int")
        high = _number(f"{where}.high", raw["high"], kind == "int")
        if not low < high:
            _fail(where, f"low={low} must be smaller than high={high}")
        if kind == "loguniform" and low <= 0:
            _fail(f"{where}.low", f"a log-uniform range needs low > 0, got {low} (use include_zero: true for 0)")
        if "step" in raw:
            if kind != "int":
                _fail(where, "'step' applies only to int parameters")
            step = _number(f"{where}.step", raw["step"], integer=True)
            if not 1 <= step <= high - low:
                _fail(f"{where}.step", f"{step} is not an int in 1..{high - low} (high − low)")
    include_zero = raw.get("include_zero", False)
    if not isinstance(include_zero, bool):
        _fail(f"{where}.include_zero", f"expected true or false, got {quoted(include_zero)}")
    when = raw.get("when", {})
    if not isinstance(when, dict):
        _fail(f"{where}.when", f"expected a mapping like {{method: [prokt, lgtm]}}, got {quoted(when)}")
    conditions = []
    for other, values in when.items():
        if other not in earlier:
            _fail(f"{where}.when", f"{quoted(other)} is not a parameter declared before {name}; declared so far: "
                                   f"{', '.join(earlier) or 'none'}")
        values = values if isinstance(values, list) else [values]
        parent = earlier[other]
        if parent.type != "categorical":
            _fail(f"{where}.when", f"can only depend on categorical parameters; {other} is {parent.type}")
        bad = [v for v in values if v not in parent.choices]
        if bad:
            _fail(f"{where}.when.{other}", f"{bad} are not among {other}'s choices {list(parent.choices)}")
        conditions.append((other, tuple(values)))
    return Param(name, kind, low, high, step, choices, tuple(conditions), include_zero)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A validated space; calling it on an Optuna trial draws one configuration (define-by-run)."""

    params: tuple[Param, ...]
    fixed: dict
    epochs: dict
    source: str = "<dict>"

    def __call__(self, trial) -> dict:
        return self.draw(trial)

    def draw(self, trial, context: dict | None = None) -> dict:
        """One configuration. ``context``: the settings of the trials (their task, the base settings): a parameter
        that cannot act under them and the values drawn before it (``config.inert_settings``, e.g. the KD
        temperature on a regression task) is not drawn, so no trial of the search spends a draw on it."""
        known = self.known_settings(context) if context is not None else None
        drawn = {}
        for p in self.params:
            if p.active(drawn) and (known is None or p.name not in inert_settings(known | spec_values(drawn))):
                drawn[p.name] = p.suggest(trial)
        return drawn

    def known_settings(self, context: dict) -> dict:
        """What every trial's settings are before anything is drawn: ``context`` and ``fixed``, without the
        parameters the space searches (their values are not known until drawn)."""
        searched = {p.name for p in self.params} | ({"opdf_cores"} if any(p.name == "opdf" for p in self.params)
                                                     else set())
        return {k: v for k, v in (context | self.fixed).items() if k not in searched}

    def inert_given(self, context: dict, given: tuple[str, ...] = ()) -> list[str]:
        """The settings fixed by the space (or ``given`` for every trial: ``--set``, ``--config``) that cannot act
        for any method the space draws, under ``context`` (a task's trial settings): a value that does nothing."""
        known = self.known_settings(context)
        inert = set.intersection(*(set(inert_settings(known | {"method": m})) for m in self.methods()))
        searched = {p.name for p in self.params}
        inert -= {switch for switch, qualified in QUALIFIERS.items() if qualified in searched}
        return [name for name in RunSpec.hyperparameters() if name in inert and (name in self.fixed or name in given)]

    def epochs_for(self, task: str) -> int:
        return self.epochs.get(task, self.epochs.get("default", RunSpec.epochs))

    def values_of(self, name: str) -> tuple:
        """The extremes of what the space draws for ``name`` (a range's bounds, a categorical's non-null choices;
        empty when it is not searched): what checks before a search must accept."""
        for p in self.params:
            if p.name == name:
                return tuple(c for c in p.choices if c is not None) if p.type == "categorical" else (p.low, p.high)
        return ()

    def methods(self) -> tuple[str, ...]:
        for p in self.params:
            if p.name == "method":
                return p.choices
        return (self.fixed.get("method", RunSpec.method),)

    def cells(self) -> list[dict]:
        """Every (method, OPDF on/off) the space can draw, as partial configurations: the first trials of a TPE
        search (``SearchSettings.cover_cells``), so a short search shows every cell before TPE takes over."""
        cells = [{}]
        for p in self.params:
            if p.name in CELL_PARAMS and p.type == "categorical" and not p.when and len(p.choices) > 1:
                cells = [cell | {p.name: choice} for cell in cells for choice in p.choices]
        return cells if len(cells) > 1 else []

    def restrict_methods(self, methods: list[str]) -> SearchSpace:
        """The same space over ``methods`` only (``tune_main.py --methods``)."""
        unknown = [m for m in methods if m not in self.methods()]
        if unknown:
            raise ValueError(f"--methods {unknown} not in the space's methods {list(self.methods())} ({self.source})")
        params = tuple(dataclasses.replace(p, choices=tuple(methods)) if p.name == "method" else p
                       for p in self.params)
        fixed = dict(self.fixed)
        if not any(p.name == "method" for p in params):
            fixed["method"] = methods[0]
        return dataclasses.replace(self, params=params, fixed=fixed)


# a fixed switch that says what a searched parameter means (``parse_space`` requires T² with a searched temperature):
# it belongs to that parameter's definition, so it is never reported as a value that cannot act
QUALIFIERS = {"t2_scaling": "temperature"}
CELL_PARAMS = ("method", "opdf")      # what a report's table rows are: each pair is a cell worth seeing early


def spec_values(drawn: dict) -> dict:
    """RunSpec field values of one drawn configuration (pseudo-parameters and switches resolved)."""
    values = {k: v for k, v in drawn.items() if k in SPEC_FIELDS}
    if drawn.get("opdf") is False:
        values["opdf_cores"], values["opdf_bond_dim"] = 0, None
    return values


def parse_space(raw, source: str = "<dict>") -> SearchSpace:
    if not isinstance(raw, dict):
        _fail(source, f"expected a mapping with keys {', '.join(TOP_KEYS)}, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        _fail(source, f"unknown top-level key(s) {unknown}; allowed: {', '.join(TOP_KEYS)}")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        _fail(f"{source} fixed", f"expected a mapping of RunSpec fields, got {quoted(fixed)}")
    bad = sorted(set(fixed) - set(SPEC_FIELDS))
    if bad:
        _fail(f"{source} fixed", f"unknown RunSpec field(s) {bad}")
    if "epochs" in fixed:
        _fail(f"{source} fixed.epochs", EPOCHS_HINT)
    cli_only = sorted(k for k in fixed if k in NOT_SEARCHABLE and k not in FIXED_EXECUTION)
    if cli_only:
        _fail(f"{source} fixed", f"{cli_only} cannot be set in a space: what a search distils and where it runs "
                                 f"come from the command line (--task, --preset, --teacher, --data-dir, …)")
    epochs = raw.get("epochs") or {}
    if not isinstance(epochs, dict):
        _fail(f"{source} epochs", f"expected a mapping task → epochs, got {quoted(epochs)}")
    from opdf_ray.tasks import NAME, TASKS

    for task, n in epochs.items():      # a dataset's name is checked against the searched tasks (hpo.checks)
        if task != "default" and task not in TASKS and not (isinstance(task, str) and NAME.fullmatch(task)):
            _fail(f"{source} epochs.{task}", f"unknown task; allowed: default, {', '.join(TASKS)} or a dataset's "
                                             f"name")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= INT_MOST["epochs"]:
            _fail(f"{source} epochs.{task}", f"{quoted(n)} is not an int in 1..{INT_MOST['epochs']:,}")
    params: dict[str, Param] = {}
    raw_params = raw.get("params") or {}
    if not isinstance(raw_params, dict):
        _fail(f"{source} params", f"expected a mapping name → parameter, got {quoted(raw_params)}")
    for name, value in raw_params.items():
        if name in fixed:
            _fail(f"{source} params.{name}", "is also in 'fixed'; keep it in one place")
        params[name] = _parse_param(name, value, params)
    if "temperature" in params and "t2_scaling" not in params and fixed.get("t2_scaling") is not True:
        _fail(f"{source} params.temperature", "searching the KD temperature without T² scaling weakens KD by up to "
                                              "T² (16× at T=4); add t2_scaling: true to 'fixed' (Hinton) or search "
                                              "t2_scaling too")
    space = SearchSpace(tuple(params.values()), dict(fixed), dict(epochs), source)
    _check_draws(space)
    return space


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        shipped = sorted(p.name for p in default_space_path().parent.glob("*.yaml"))
        raise FileNotFoundError(f"search space {path} not found; shipped spaces: {', '.join(shipped)}")
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ValueError(f"search space {path} is not valid YAML: {yaml_problem(e)}") from None
    return parse_space(raw, str(path))


def default_space_path() -> Path:
    return shipped_path("search_spaces") / "default.yaml"


def _check_draws(space: SearchSpace, n: int = 64) -> None:
    """Draw the space with a random sampler and build each RunSpec: a combination the spec rejects (say a
    fixed ``opdf_bond_dim`` while ``opdf`` can be off) fails here, not in trial 17."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(n):
        trial = study.ask()
        drawn = space.draw(trial)
        values = space.fixed | spec_values(drawn)
        try:
            RunSpec.from_dict(values)
        except ValueError as e:
            _fail(space.source, f"a drawn configuration is invalid ({e}); drawn: {drawn}")
        study.tell(trial, 0.0)
