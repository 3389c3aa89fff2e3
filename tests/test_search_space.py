"""Search-space YAML: the shipped spaces validate, draws follow the conditions, bad files fail clearly."""

from pathlib import Path

import optuna
import pytest
import yaml

from opdf_ray.config import METHODS, RunSpec
from opdf_ray.search_space import SPEC_FIELDS, default_space_path, load_space, parse_space, spec_values

SPACES = sorted((Path(__file__).resolve().parent.parent / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_spaces_are_valid_and_search_known_methods(path):
    space = load_space(path)                       # raises on any invalid key, range or drawn combination
    assert space.source == str(path) and space.params
    assert set(space.methods()) <= set(METHODS) and all(p.name in SPEC_FIELDS or p.name == "opdf"
                                                        for p in space.params)


def draws(space, n=60, seed=0):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.draw(trial))
        study.tell(trial, 0.0)
    return out


def test_default_space_draws_conditional_parameters_only_where_they_apply():
    space = load_space(default_space_path())
    drawn = draws(space)
    assert {d["method"] for d in drawn} == {"kd", "prokt", "lgtm", "theseus"}
    for d in drawn:
        assert ("teacher_lr" in d) == (d["method"] in ("prokt", "lgtm"))
        assert ("replacing_rate" in d) == (d["method"] == "theseus")
        assert ("t_alpha_kd" not in d) and ("lgtm_variant" not in d)    # the defaults: the paper variant
        assert ("temperature" in d) == (d["method"] in ("kd", "prokt", "lgtm"))
        assert ("opdf_cores" in d) == d["opdf"]
        assert 1e-6 <= d["lr"] <= 3e-4 and 0 <= d["warmup_ratio"] <= 0.1
        assert ("opdf_core_lr" in d) == ("opdf_train_cores" in d) == d["opdf"]
        aligned = d.get("opdf_train_cores") == "all"      # central training leaves nothing to align
        assert ("opdf_align_ratio" in d) == ("opdf_align_map" in d) == aligned
        values = spec_values(d)
        if not d["opdf"]:
            assert values["opdf_cores"] == 0 and values["opdf_bond_dim"] is None
        RunSpec.from_dict(space.fixed | values)
    ratios = [d["opdf_align_ratio"] for d in drawn if "opdf_align_ratio" in d]
    assert 0.0 in ratios and all(r == 0 or 0.01 <= r <= 1 for r in ratios)   # the ablation and the range
    assert {d.get("opdf_core_lr") for d in drawn if d["opdf"]} == {"matched", "1.0"}
    assert space.fixed["t2_scaling"] is True                            # the temperature is searched


def test_searching_the_temperature_without_t2_scaling_is_refused():
    temperature = {"temperature": {"type": "uniform", "low": 1.0, "high": 4.0}}
    with pytest.raises(ValueError, match="without T² scaling weakens KD by up to T²"):
        parse_space({"params": temperature})
    parse_space({"fixed": {"t2_scaling": True}, "params": temperature})
    parse_space({"params": {"t2_scaling": {"type": "categorical", "choices": [True, False]}, **temperature}})


def test_restricting_methods_keeps_only_those():
    space = load_space(default_space_path()).restrict_methods(["kd"])
    assert {d["method"] for d in draws(space, 10)} == {"kd"}
    with pytest.raises(ValueError, match=r"--methods \['distil'\] not in the space's methods"):
        load_space(default_space_path()).restrict_methods(["distil"])


def test_the_quick_starts_first_trials_are_every_method_and_opdf_cell():
    space = load_space(default_space_path()).restrict_methods(["kd", "theseus"])
    assert space.cells() == [{"method": "kd", "opdf": True}, {"method": "kd", "opdf": False},
                             {"method": "theseus", "opdf": True}, {"method": "theseus", "opdf": False}]
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2), direction="maximize")
    for cell in space.cells():                     # what the search enqueues: the rest of each cell is drawn
        study.enqueue_trial(cell)
    drawn = [space.draw(study.ask()) for _ in range(4)]
    assert [(d["method"], d["opdf"]) for d in drawn] == [(c["method"], c["opdf"]) for c in space.cells()]
    assert all("lr" in d for d in drawn) and all("opdf_cores" in d for d in drawn if d["opdf"])
    assert load_space(default_space_path()).restrict_methods(["kd"]).cells() == [{"opdf": True}, {"opdf": False}]
    assert parse_space({"params": {"lr": {"type": "uniform", "low": 0.1, "high": 1}}}).cells() == []


@pytest.mark.parametrize("raw,message", [
    ({"parms": {}}, r"unknown top-level key\(s\) \['parms'\]; allowed: fixed, epochs, params"),
    ({"params": {"learning_rate": {"type": "uniform", "low": 0, "high": 1}}},
     "params.learning_rate: unknown parameter"),
    ({"params": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-5}}},
     "low=0.001 must be smaller than high=1e-05"),
    ({"params": {"lr": {"type": "loguniform", "low": 0, "high": 1e-5}}}, "log-uniform range needs low > 0"),
    ({"params": {"lr": {"type": "normal", "low": 0, "high": 1}}}, "'normal' is not one of loguniform, uniform"),
    ({"params": {"max_steps": {"type": "int", "low": 1.5, "high": 3}}}, "params.max_steps.low: 1.5 is not an int"),
    ({"params": {"epochs": {"type": "int", "low": 1, "high": 3}}}, "epochs cannot be searched: epochs are set per "
                                                                    "task in the top-level 'epochs:' section"),
    ({"fixed": {"epochs": 7}}, "fixed.epochs: epochs are set per task in the top-level 'epochs:' section"),
    ({"params": {"lr": {"type": "uniform", "low": "a", "high": 1}}}, "params.lr.low: 'a' is not a finite number"),
    ({"params": {"lr": {"type": "uniform", "low": 0.1, "high": 1, "when": {"method": ["kd"]}}}},
     "'method' is not a parameter declared before lr"),
    ({"params": {"method": {"type": "categorical", "choices": ["kd"]},
                 "lr": {"type": "uniform", "low": 0.1, "high": 1, "when": {"method": ["lgtm"]}}}},
     r"\['lgtm'\] are not among method's choices"),
    ({"params": {"task": {"type": "categorical", "choices": ["rte"]}}}, "task cannot be searched"),
    ({"fixed": {"lr": -1.0}}, r"a drawn configuration is invalid \(lr=-1.0 is invalid"),
    ({"fixed": {"lrate": 1.0}}, r"unknown RunSpec field\(s\) \['lrate'\]"),
    ({"epochs": {"rte e": 3}}, "epochs.rte e: unknown task; allowed: default, cola, .* or a dataset's name"),
    ({"params": {"opdf_cores": {"type": "categorical", "choices": [1]}}}, "opdf_cores=1 is invalid"),
])
def test_bad_space_is_a_clear_error(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_space(raw, "test.yaml")


def test_missing_or_malformed_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="shipped spaces: default.yaml"):
        load_space(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: {lr: [unclosed")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_space(bad)
    bad.write_text(yaml.safe_dump({"params": {"lr": {"type": "uniform", "low": 1, "high": 2, "typo": 1}}}))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['typo'\]"):
        load_space(bad)


STUDY_SPACES = Path(__file__).resolve().parent.parent / "benchmarks/study/spaces"


@pytest.mark.parametrize("path", [p for p in sorted(STUDY_SPACES.glob("*.yaml")) + sorted(STUDY_SPACES.glob(
    "best/*.yaml")) if not p.name.startswith("eq-")], ids=lambda p: p.name)
def test_the_study_grids_are_valid_grids(path):
    """The multi-seed study runs these with tune_main.py --sampler grid: each must be a valid, all-categorical grid."""
    from opdf_ray.search_space import load_space
    from opdf_ray.hpo.tuner import grid_of

    assert grid_of(load_space(path))


@pytest.mark.parametrize("method", ["kd", "theseus", "prokt", "lgtm"])
def test_the_equal_budget_arms_differ_only_by_the_opdf_knobs(method):
    """Issue 23 §2: the OPDF arm searches the dense arm's parameters over the same ranges, plus its own knobs."""
    from opdf_ray.search_space import load_space

    dense, opdf = (load_space(STUDY_SPACES / f"eq-{method}{arm}.yaml") for arm in ("", "-opdf"))
    assert dense.fixed == opdf.fixed and dense.epochs == opdf.epochs
    assert opdf.params[:len(dense.params)] == dense.params
    assert all(p.name.startswith("opdf_") for p in opdf.params[len(dense.params):])
    assert {p.name for p in opdf.params} >= {"opdf_cores", "opdf_core_lr", "opdf_train_cores", "opdf_align_map",
                                             "opdf_align_ratio"}


def test_every_search_efficiency_landscape_is_a_valid_grid_and_tpe_space():
    """benchmarks/bench_search.py efficiency: a landscape the space rules refuse fails after minutes of Ray set-up."""
    import importlib.util

    from opdf_ray.hpo.tuner import grid_of

    path = STUDY_SPACES.parent.parent / "bench_search.py"
    spec = importlib.util.spec_from_file_location("bench_search", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for method, (grid, params, cores) in bench.SPACES.items():
        grid_space = bench._space(method, 3, {k: {"type": "categorical", "choices": v} for k, v in grid.items()},
                                  cores, "grid")
        assert set(grid_of(grid_space)) == set(grid) | ({"opdf_cores"} if len(cores) > 1 else set())
        assert {p.name for p in bench._space(method, 3, params, cores, "tpe").params} >= set(params)


def test_the_quick_start_space_covers_its_four_cells_first():
    """The README's quick start promises KD and Theseus, each with and without OPDF, in its 4 trials."""
    from opdf_ray.search_space import load_space

    space = load_space(Path(__file__).resolve().parent.parent / "search_spaces" / "quickstart.yaml")
    assert sorted((c["method"], c["opdf"]) for c in space.cells()) == [("kd", False), ("kd", True),
                                                                       ("theseus", False), ("theseus", True)]
