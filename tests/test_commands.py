"""``opdf-ray``: one entry point, its subcommands naming themselves, one list syntax, each default said once."""

import re
import subprocess
import sys

import pytest

from opdf_ray import __version__
from opdf_ray.cli import build_parser as search_parser
from opdf_ray.commands import COMMANDS, main, split_list
from opdf_ray.run import build_parser as run_parser


def test_version_and_the_command_list(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"opdf-ray {__version__}"
    assert main([]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in COMMANDS)
    assert main(["distil"]) == 2 and "unknown command 'distil'" in capsys.readouterr().err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_subcommand_helps_without_importing_torch(command):
    """--help is for reading: it answers in a fraction of a second, before torch, Ray or transformers load."""
    probe = ("import sys; from opdf_ray.commands import main\n"
             f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
             "heavy = sorted({'torch', 'ray', 'transformers'} & set(sys.modules)); print(heavy, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr.strip().splitlines()[-1] == "[]", done.stderr[-2000:]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_subcommand_help_names_itself(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith(f"usage: opdf-ray {command}")


@pytest.mark.parametrize("parser", [search_parser(), run_parser()])
def test_help_says_each_default_once(parser):
    text = parser.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    for entry in re.split(r"\n  -", text):
        assert len(re.findall(r"\(default:", entry)) <= 1, entry


def test_lists_are_given_with_commas_or_spaces_everywhere():
    assert split_list(["kd,lgtm", "theseus"]) == split_list("kd,lgtm,theseus") == ["kd", "lgtm", "theseus"]
    assert split_list(search_parser().parse_args(["--task", "rte", "--methods", "kd", "lgtm"]).methods) == \
        split_list(search_parser().parse_args(["--task", "rte", "--methods", "kd,lgtm"]).methods)


def test_any_run_setting_reaches_a_search_with_set(tmp_path):
    from opdf_ray.hpo.checks import validate
    from opdf_ray.hpo.sizing import overrides

    args = search_parser().parse_args(["--task", "rte", "--preset", "tiny", "--storage", str(tmp_path),
                                       "--set", "mpo_weight=per-forward", "--set", "cudnn-attention=true",
                                       "--set", "opdf_bond_dim=none", "--set", "pad_to_multiple_of=8"])
    _, bases, _ = validate(args)
    assert overrides(args) == {"mpo_weight": "per-forward", "cudnn_attention": True, "opdf_bond_dim": None,
                               "pad_to_multiple_of": 8}
    assert bases["rte"].mpo_weight == "per-forward" and bases["rte"].pad_to_multiple_of == 8


@pytest.mark.parametrize("flags, message", [
    (["--set", "nonsense=1"], "expected KEY=VALUE with KEY a run setting"),
    (["--set", "lr"], "expected KEY=VALUE"),
    (["--set", "task=sst2"], "a search sets it itself"),
    (["--set", "batch_size=big"], "--set batch_size='big': not a int"),
    (["--set", "cudnn_attention=maybe"], "not a bool"),
    (["--set", "lr=1e-4"], r"\['lr'\] set for every trial \(--config, --set .* and by the search space"),
    (["--set", "max_length=64"], r"\['max_length'\] set for every trial .* and by the search space"),
    (["--max-train-samples", "100", "--space", "SPACE"], r"\['max_train_samples'\] set for every trial \(--config"),
    (["--set", "mpo_weight=sometimes"], "mpo_weight='sometimes' is invalid"),
])
def test_a_setting_given_twice_or_badly_is_refused_before_ray_starts(tmp_path, flags, message):
    from opdf_ray.hpo.checks import validate

    space = tmp_path / "space.yaml"
    space.write_text("fixed: {max_train_samples: 64}\nparams:\n  lr: {type: loguniform, low: 1.0e-5, high: 1.0e-3}\n")
    flags = [str(space) if f == "SPACE" else f for f in flags]
    args = search_parser().parse_args(["--task", "rte", "--preset", "tiny", "--storage", str(tmp_path), *flags])
    with pytest.raises(ValueError, match=message):
        validate(args)


def test_storage_that_is_a_file_and_a_resume_of_nothing_are_refused_before_ray_starts(tmp_path):
    from opdf_ray.hpo.checks import validate

    def check(*flags):
        validate(search_parser().parse_args(["--task", "rte", "--preset", "tiny", *flags]))

    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="--storage .*afile is a file; pass a folder"):
        check("--storage", str(tmp_path / "afile"))
    (tmp_path / "s" / "other-rte").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"--resume: no search typo-rte under .* \(searches there: other-rte\)"):
        check("--storage", str(tmp_path / "s"), "--name", "typo", "--resume")
    check("--storage", str(tmp_path / "s"), "--name", "other", "--resume")      # there: resumable


def test_a_search_space_with_a_key_given_twice_is_refused(tmp_path):
    from opdf_ray.search_space import load_space

    space = tmp_path / "space.yaml"
    space.write_text("params:\n  lr: {type: loguniform, low: 1.0e-5, high: 1.0e-3}\n"
                     "  lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n")
    with pytest.raises(ValueError, match="duplicated key 'lr'"):
        load_space(space)


def test_a_search_whose_every_trial_failed_is_an_error_not_a_success():
    from opdf_ray.hpo.execute import check_not_all_failed

    check_not_all_failed(3, 2)                     # some finished: a search that worked
    check_not_all_failed(0, 0)                     # nothing to run (a resumed search that was done)
    with pytest.raises(RuntimeError, match=r"every trial failed \(3 of 3\)"):   # main() prints it, exits 1
        check_not_all_failed(3, 3)


def test_a_config_file_sets_a_run_and_a_search_and_flags_override_it(tmp_path):
    from opdf_ray.cli import parse_args
    from opdf_ray.hpo.checks import validate
    from opdf_ray.hpo.sizing import overrides
    from opdf_ray.commands import parse_with_config

    config = tmp_path / "run.yaml"
    config.write_text("task: sst2\nmethod: theseus\nlr: 1e-4\nopdf-cores: 5\nseed: 3\npad_to_multiple_of: 8\n")
    run, rest = parse_with_config(run_parser(), ["--config", str(config), "--lr", "3e-4"])
    assert rest == {} and (run.task, run.method, run.opdf_cores, run.seed) == ("sst2", "theseus", 5, 3)
    assert run.lr == 3e-4                                   # the flag wins; YAML's text "1e-4" read as a float
    assert parse_with_config(run_parser(), ["--config", str(config)])[0].lr == 1e-4

    search = parse_args(["--config", str(config), "--preset", "tiny", "--storage", str(tmp_path / "s"),
                         "--seed", "4", "--space", str(tmp_path / "space.yaml")])
    (tmp_path / "space.yaml").write_text("params:\n  warmup_ratio: {type: uniform, low: 0.0, high: 0.1}\n")
    assert search.task == "sst2" and search.seed == 4       # a flag of the search's own, overridden by the flag
    assert overrides(search) == {"method": "theseus", "lr": 1e-4, "opdf_cores": 5, "pad_to_multiple_of": 8}
    _, bases, _ = validate(search)
    assert (bases["sst2"].method, bases["sst2"].opdf_cores, bases["sst2"].seed) == ("theseus", 5, 4)


@pytest.mark.parametrize("text, message", [
    ("lr: fast\n", "--config CONFIG: lr='fast': not a float"),
    ("learning_rate: 1.0e-4\n", "'learning_rate' is not a run setting"),
    ("lr: 1.0e-4\nlr: 2.0e-4\n", "duplicated key 'lr'"),
    ("- lr\n", "expected a mapping of run settings"),
    ("epochs: 3\n", r"sets \['epochs'\]: a search sets it itself"),
])
def test_a_bad_config_file_is_one_line_from_both_commands(tmp_path, capsys, text, message):
    from opdf_ray import cli, run

    config = tmp_path / "config.yaml"
    config.write_text(text)
    message = message.replace("CONFIG", str(config))
    assert cli.main(["--config", str(config), "--task", "rte", "--storage", str(tmp_path / "s")]) == 2
    assert re.search(message, capsys.readouterr().err)
    if "search sets it" not in message:                      # a single run takes epochs from its config
        assert run.main(["--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_a_config_that_is_not_there_is_named(capsys):
    from opdf_ray import run

    assert run.main(["--config", "nowhere.yaml"]) == 2
    assert "--config nowhere.yaml is not a file" in capsys.readouterr().err


def test_the_python_api_refuses_what_the_command_line_refuses_before_ray_starts(tmp_path):
    import sys

    import opdf_ray

    with pytest.raises(ValueError, match=r"search\(\) got unknown option\(s\) \['num_trials'\]; allowed: .*num_samples"):
        opdf_ray.search("rte", num_trials=4)
    with pytest.raises(ValueError, match=r"--task 'rtee' is not a GLUE task \(cola, sst2"):
        opdf_ray.search(["rte", "rtee"], storage=str(tmp_path))
    with pytest.raises(ValueError, match=r"settings sets \['epochs'\]: a search sets it itself"):
        opdf_ray.search("rte", settings={"epochs": 3})
    with pytest.raises(ValueError, match=r"\['lr'\] set for every trial \(--config, --set .* and by the search space"):
        opdf_ray.search("rte", preset="tiny", storage=str(tmp_path), settings={"lr": "1e-4"})
    with pytest.raises(ValueError, match="settings: 'learning_rate' is not a run setting"):
        opdf_ray.search("rte", settings={"learning_rate": 1e-4})
    with pytest.raises(ValueError, match=r"distill\(\): 'opdf_core' is not a run setting"):
        opdf_ray.distill("rte", opdf_core=5)
    with pytest.raises(ValueError, match="lr=-1.0 is invalid"):
        opdf_ray.distill("rte", lr=-1.0)
    assert not (sys.modules.get("ray") and sys.modules["ray"].is_initialized())        # none started Ray
    assert not list(tmp_path.iterdir())


def test_a_resume_with_other_settings_than_the_search_was_started_with_is_refused(tmp_path):
    """Before: --resume restored the pickled search and silently ignored a changed space, --set or --num-samples."""
    from opdf_ray.hpo.checks import search_signature, validate, write_signature

    space = tmp_path / "space.yaml"
    space.write_text("params:\n  lr: {type: loguniform, low: 1.0e-5, high: 1.0e-3}\n")
    common = ["--task", "rte", "--preset", "tiny", "--storage", str(tmp_path / "s"), "--space", str(space),
              "--num-samples", "4", "--set", "eval_steps=8"]
    args = search_parser().parse_args(common)
    _, bases, loaded = validate(args)
    write_signature(args.storage, "opdf-rte", search_signature(args, loaded, bases["rte"]), resumed=False)
    assert (tmp_path / "s" / "opdf-rte" / "opdf-search.json").is_file()
    validate(search_parser().parse_args([*common, "--resume"]))                    # as it was started: resumable
    for change, named in ((["--num-samples", "8"], "search.num_samples"), (["--set", "eval_steps=4"],
                          "every_trial.eval_steps"), (["--seed", "1"], "base.seed")):
        message = rf"--resume: opdf-rte was started with other settings \(.*{named}.* differ"
        with pytest.raises(ValueError, match=message):
            validate(search_parser().parse_args([*common, *change, "--resume"]))
    space.write_text("params:\n  lr: {type: loguniform, low: 1.0e-5, high: 1.0e-2}\n")
    with pytest.raises(ValueError, match=r"\(space.params differ\)"):
        validate(search_parser().parse_args([*common, "--resume"]))


def test_run_prints_its_effective_settings_as_a_config_it_reads_back(tmp_path, capsys):
    from opdf_ray import run as run_cli

    config = tmp_path / "c.yaml"
    config.write_text("lr: 1e-4\nopdf_cores: 5\nteacher: null\n")
    assert run_cli.main(["--config", str(config), "--task", "mrpc", "--seed", "3", "--print-config"]) == 0
    printed = capsys.readouterr().out
    (tmp_path / "back.yaml").write_text(printed)
    again = run_cli.parse_spec(["--config", str(tmp_path / "back.yaml")])
    assert again == run_cli.parse_spec(["--config", str(config), "--task", "mrpc", "--seed", "3"])
    assert (again.lr, again.opdf_cores, again.task, again.seed) == (1e-4, 5, "mrpc", 3)


def test_a_search_config_holds_search_options_and_prints_back_as_one(tmp_path, capsys):
    from opdf_ray import cli

    config = tmp_path / "s.yaml"
    config.write_text("task: rte\nnum-samples: 3\nmethods: [kd, theseus]\nsampler: grid\nlr: 1e-4\n")
    args = cli.parse_args(["--config", str(config), "--set", "eval_steps=16"])
    assert (args.task, args.num_samples, args.methods, args.sampler) == ("rte", 3, ["kd", "theseus"], "grid")
    assert args.config_settings == {"lr": 1e-4}
    assert cli.main(["--config", str(config), "--set", "eval_steps=16", "--max-epochs", "2", "--print-config"]) == 0
    (tmp_path / "back.yaml").write_text(capsys.readouterr().out)
    again = cli.parse_args(["--config", str(tmp_path / "back.yaml")])
    assert (again.num_samples, again.methods, again.max_epochs) == (3, ["kd", "theseus"], 2)
    assert again.config_settings == {"lr": 1e-4, "eval_steps": 16}
    config.write_text("task: rte\nnum_samples: many\n")
    with pytest.raises(SystemExit):                       # argparse's own type check, as on the command line
        cli.parse_args(["--config", str(config)])


def test_run_and_search_help_come_in_sections_by_subject(capsys):
    from opdf_ray.config import SUBJECTS

    for command, titles in (("run", list(SUBJECTS.values())),
                            ("search", ["what to search", "the search", "execution", "results, tracking"])):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        at = [out.find(f"\n{title}") for title in titles]
        assert -1 not in at and at == sorted(at), (command, at)


def test_the_python_search_documents_every_option_it_takes():
    """help(opdf_ray.search) lists the search's real options: none missing, none that does not exist."""
    import opdf_ray

    parser = search_parser()
    options = {a.dest for a in parser._actions if a.option_strings} - {"help", "task", "config", "set", "print_config"}
    documented = set(re.findall(r"``(\w+)``", opdf_ray.search.__doc__.split("``settings`` are")[0]))
    documented -= {"task", "options", "SearchOutcome", "leaderboard", "rows", "best", "failed"} - options
    assert options == documented, options ^ documented
