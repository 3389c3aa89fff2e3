"""``python -m opdf_ray.run``: train one configuration in one process, print a result line, save the student.

Every flag is a ``RunSpec`` field (``--opdf-cores`` ↔ ``opdf_cores``); ``--help`` lists them all with defaults.
Example (offline, CPU, a few minutes):

    python -m opdf_ray.run --task rte --method lgtm --opdf-cores 5 --preset minilm --data-dir ../shared/glue
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import yaml

from opdf_ray import log_to_console
from opdf_ray.commands import CONFIG_HELP, HelpFormatter, parse_with_config
from opdf_ray.config import SUBJECTS, RunSpec
from opdf_ray.tasks import names_dataset


def build_parser(prog: str = "python -m opdf_ray.run") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--print-config", action="store_true", help="print the effective settings (flags over "
                        "--config over the defaults) as YAML that --config reads back, and stop")
    group = parser
    for f in dataclasses.fields(RunSpec):             # in RunSpec's order, one help section per subject
        if f.name in SUBJECTS:
            group = parser.add_argument_group(SUBJECTS[f.name])
        flag, meta = "--" + f.name.replace("_", "-"), f.metadata
        if (meta.get("type") or type(f.default)) is bool:     # unset (None) is a third state where allowed
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=meta["help"])
        else:
            group.add_argument(flag, type=meta.get("type") or type(f.default), default=f.default,
                               choices=meta.get("choices"), help=meta["help"])
    return parser


def parse_spec(argv: list[str] | None = None, prog: str = "python -m opdf_ray.run") -> RunSpec:
    """The run's settings: its flags over a ``--config`` file's over the defaults (every run setting is a flag)."""
    args, _ = parse_with_config(build_parser(prog), argv)
    values = vars(args)
    values.pop("config")
    values.pop("print_config")
    if names_dataset(values):            # your own data: read once here, so its problems show before any work
        from opdf_ray.userdata import resolve

        values = resolve(values)
    return RunSpec(**values)


def result_line(results: dict) -> str:
    dev = " ".join(f"{split}:{name}={value:.2f}" for split, metrics in results["dev"].items()
                   for name, value in metrics.items())
    sel = " ".join(f"{name}={value:.2f}" for name, value in results["selection"].items())
    opdf = results["spec"]["opdf_cores"] or "off"
    return (f"RESULT task={results['task']} method={results['method']} opdf={opdf} protocol={results['protocol']} "
            f"selection[{sel}] dev[{dev}] best_step={results['best_step']} "
            f"train_params={results['trainable_params']:,} inference_params={results['inference_params']:,} "
            f"wall={results['wall_seconds']:.0f}s "
            f"train_ex/s={results['examples_per_second']:.1f}")


def main(argv: list[str] | None = None, prog: str = "python -m opdf_ray.run") -> int:
    log_to_console()
    try:
        spec = parse_spec(argv, prog)                                 # bad settings: the error before any import
        if "--print-config" in (sys.argv[1:] if argv is None else argv):
            print(yaml.safe_dump(spec.to_dict(), sort_keys=False), end="")
            return 0
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from transformers.utils import logging as hf_logging

    from opdf_ray.api import distill

    hf_logging.disable_progress_bar()

    try:
        results = distill(**spec.to_dict())
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was saved for this run (a fine-tuned teacher is cached only when complete); "
              "run the same command again", file=sys.stderr)
        return 130
    print(result_line(results))
    if results["output_dir"]:
        print(f"merged student and results.json in {results['output_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
