"""``opdf-ray``: one command for everything opdf-ray does, and the argument conventions every command shares.

    opdf-ray search --task sst2 --methods kd,theseus     # = tune_main.py, opdf-tune
    opdf-ray run --task rte --method kd --opdf-cores 5   # = python -m opdf_ray.run, opdf-run
    opdf-ray report outputs/search/leaderboard           # = python -m opdf_ray.report, opdf-report
    opdf-ray export outputs/search/leaderboard --out best
    opdf-ray demo

The old names stay as aliases; each subcommand's ``--help`` names itself.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from opdf_ray import __version__

COMMANDS = {        # name → (module with main(argv, prog), one line)
    "search": ("opdf_ray.cli", "search hyperparameters with Ray Tune + Optuna + ASHA; every trial → the leaderboard"),
    "run": ("opdf_ray.run", "train one configuration in this process and save the merged student"),
    "report": ("opdf_ray.report", "render a leaderboard's GLUE tables, verdicts and plots"),
    "export": ("opdf_ray.export", "copy a leaderboard's best student out as a Hugging Face folder with a model card"),
    "demo": ("opdf_ray.demo", "a one-minute look at the OPDF core on the packaged MiniLM"),
}


class HelpFormatter(argparse.HelpFormatter):
    """Shows a flag's default once: appended only where the help does not already say it and there is one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def split_list(values: str | list[str] | None) -> list[str] | None:
    """A list flag's values, given either way: ``--methods kd,lgtm`` or ``--methods kd lgtm`` (or both)."""
    if values is None:
        return None
    items = [values] if isinstance(values, str) else values
    return [part for item in items for part in item.split(",") if part]


CONFIG_HELP = ("YAML file of run settings (lr: 1.0e-4, opdf_cores: 5, …: the names opdf-ray run --help "
               "lists); a flag given as well overrides it")


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, dict]:
    """Parse ``argv`` where a ``--config FILE`` may give run settings: those the parser has a flag for become its
    defaults (so a flag given as well wins); the rest are returned (a search hands them to every trial).
    Raises ``ValueError``/``FileNotFoundError`` for a bad file."""
    from opdf_ray.config import load_settings

    argv = sys.argv[1:] if argv is None else list(argv)
    first, _ = parser.parse_known_args(argv)
    actions = {action.dest: action for action in parser._actions if action.option_strings}
    settings = load_settings(first.config, frozenset(actions) - {"help", "config"}) if first.config else {}
    # as flags written before the command line's own (which win): argparse then checks their types and choices,
    # which it never does for defaults
    given = [token for key, value in settings.items() if key in actions
             for token in as_flags(actions[key], value, f"--config {first.config}: {key}")]
    return parser.parse_args([*given, *argv]), {k: v for k, v in settings.items() if k not in actions}


def parse_or_raise(parser: argparse.ArgumentParser, argv: list[str], where: str) -> argparse.Namespace:
    """``parser.parse_args(argv)`` raising ``ValueError`` instead of printing usage and exiting (the Python API)."""
    def error(message):
        raise ValueError(f"{where}: {message}")
    parser.error = error
    return parser.parse_args(argv)


def as_flags(action: argparse.Action, value, where: str) -> list[str]:
    """A ``--config`` value (or a Python API option) as the command-line tokens of its flag."""
    from opdf_ray.text import quoted

    flag = max(action.option_strings, key=len)
    if value is None:                          # unset: the flag's default (every optional setting's is None)
        return []
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise ValueError(f"{where}={quoted(value)}: expected true or false")
        if isinstance(action, argparse.BooleanOptionalAction):       # option_strings: --flag, --no-flag
            return [action.option_strings[0] if value else action.option_strings[-1]]
        return [flag] if value == isinstance(action, argparse._StoreTrueAction) else []
    if isinstance(action, argparse._CountAction):                 # -v: verbose=2 is -v -v
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}={quoted(value)}: expected a count (0, 1, 2)")
        return [flag] * value
    values = value if isinstance(value, list) else [value]
    if any(isinstance(v, (dict, list)) or v is None for v in values):
        raise ValueError(f"{where}={quoted(value)}: expected a value or a list of values")
    if action.nargs in ("+", "*"):
        return [flag, *map(str, values)]
    if isinstance(action, argparse._AppendAction):
        return [token for v in values for token in (flag, str(v))]
    return [flag, ",".join(map(str, values))]          # --task: [rte, mrpc] is --task rte,mrpc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    listing = "\n".join(f"  {name:<8}{line}" for name, (_, line) in COMMANDS.items())
    usage = f"usage: opdf-ray [--version] {{{','.join(COMMANDS)}}} ...\n\ncommands:\n{listing}\n\n" \
            "`opdf-ray COMMAND --help` lists a command's flags."
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    if argv[0] == "--version":
        print(f"opdf-ray {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:], prog=f"opdf-ray {argv[0]}")


if __name__ == "__main__":
    raise SystemExit(main())
