"""The `dasd` command: one entry point, one subcommand per stage.

Every stage takes `--config FILE.yaml` plus `key=value` overrides (dotted keys for nested sections,
values parsed as YAML), prints a progress bar and a summary, writes its resolved config next to its
output, and exits with status 2 and a one-line reason on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import describe_config, load_config
from .errors import DasdError
from .stages import STAGES, Stage


def _stage_parser(subparsers, name: str, stage: Stage):
    module, config_class = stage.load()
    summary = stage.summary
    doc = (module.__doc__ or summary).strip()
    epilog = "configuration keys (YAML file and/or key=value overrides):\n" + "\n".join(describe_config(config_class))
    parser = subparsers.add_parser(
        name, help=summary, description=doc, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file with the stage's configuration")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override config keys, e.g. backend.batch_size=8 (a first argument without '=' is the config file)",
    )
    if hasattr(module, "extra_arguments"):  # stage-specific flags (see dasd.stages), e.g. `dasd eval --compare A B`
        module.extra_arguments(parser)
    parser.set_defaults(_module=module, _config_class=config_class, _stage=stage)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dasd",
        description="Distribution-Aligned Sequence Distillation: distil long chain-of-thought from a teacher "
        "LLM into a small student.",
        epilog="Run `dasd STAGE --help` for a stage's options.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"dasd {__version__}")
    subparsers = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name, stage in STAGES.items():
        _stage_parser(subparsers, name, stage)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """argparse, with `key=value` overrides allowed after a stage's flags too (`dasd sample --suggest-temperatures
    schedule=…`): argparse alone ends the positional list at the first flag and rejects what follows it.

    >>> args = parse_arguments(build_parser(), ["sample", "limit=4", "--suggest-temperatures", "schedule=[]"])
    >>> args.overrides, args.suggest_temperatures
    (['limit=4', 'schedule=[]'], True)
    """
    args, extra = parser.parse_known_args(argv)
    stray = [argument for argument in extra if argument.startswith("-") or "=" not in argument]
    if stray or (extra and not args.stage):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parse_arguments(parser, argv)
    if not args.stage:
        parser.print_help()
        return 0
    try:
        if hasattr(args._module, "handle_extra") and args._module.handle_extra(args):
            return 0
        overrides = list(args.overrides)
        if overrides and "=" not in overrides[0]:
            if args._stage.positional != "config":  # `dasd report RUN_DIR`
                overrides[0] = f"{args._stage.positional}={overrides[0]}"
            elif args.config is None:  # `dasd run PIPELINE.yaml`: the config given positionally
                args.config = overrides.pop(0)
        config = load_config(args._config_class, args.config, overrides)
        args._module.run(config)
    except DasdError as exc:
        print(f"dasd {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dasd {args.stage}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
