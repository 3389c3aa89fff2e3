"""``opdf-ray``: one entry point, its subcommands naming themselves, one list syntax, each default said once."""

import re

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
