"""The ``omnivmed-train`` command: options generated from the config's fields, then the stages to run.

Every option is one field of trainer/config.py (``command_line_options()``): its flag, help text and
default come from the field, and its value is parsed by the field's type (a switch for bool, repeated
KEY=VALUE for a mapping, comma-separated for a tuple). Options become the same section -> field
overrides that ``build_config`` merges over a ``--config`` file. Torch is imported only by
``run_stage``, so ``--help`` and bad options answer at once.
"""

from __future__ import annotations

import argparse
import textwrap
import typing
from pathlib import Path

from omnivmed.cli.oneline import OneLineParser
from omnivmed.cli.oneline import fail as one_line
from omnivmed.trainer.config import (
    ConfigError,
    Option,
    TrainConfig,
    build_config,
    command_line_options,
    file_only_fields,
)

PROG = "omnivmed-train"

DESCRIPTION = """\
Train the OmniV-Med model from verified shards: with no --stage, the progressive schedule (stage 1,
then 2 from 1's output, then 3 from 2's, each on the manifests made for it; a finished stage is
not redone); with --stage N, that stage alone.

Every option sets one config field: --max-length is data.max_length, and a config file (--config,
YAML or JSON) sets the same fields by section (model, data, run, stage); options override the file."""

SECTIONS = {
    "model": "model (the model: section of a config file)",
    "data": "data (the data: section)",
    "run": "run (the run: section)",
    "stage": "stage (changes the stage --stage picks; the stage: section)",
}


def main(argv: list[str] | None = None) -> None:
    config_file, overrides, lr_update = parse_args(argv)
    from omnivmed.trainer.config import read_config_file
    from omnivmed.trainer.data.sources import TrainDataError
    from omnivmed.trainer.schedule import stage_done, stages_to_run

    try:
        if overrides.get("run", {}).get("dry_run"):
            print_plan(build_config(config_file, overrides, lr_update=lr_update, need_shards=False))
            return
        stages = stages_to_run(read_config_file(config_file) if config_file else {}, overrides)
        for number in stages:
            staged = {**overrides, "run": {**overrides.get("run", {}), "stage": number}}
            cfg = build_config(config_file, staged, lr_update=lr_update)
            if stage_done(cfg):
                print(f"stage {number}: done already ({cfg.run.stage_dir / 'model'}); nothing to do")
                continue
            check_mix_sources(cfg)
            from omnivmed.trainer.train import run_stage

            result = run_stage(cfg)
            if not result.finished:
                print(f"stage {number}: stopped at step {result.step} (resume by running the same command)")
                return
            last = f", last loss {result.losses[-1]:.4f}" if result.losses else " (nothing left to do)"
            print(f"stage {number}: finished at step {result.step}{last} -> {cfg.run.stage_dir / 'model'}")
    except (ConfigError, TrainDataError, FileNotFoundError) as err:
        fail(str(err))


def print_plan(cfg: TrainConfig) -> None:
    """``--dry-run``: the memory plan of every stage for this preset, batch and hardware."""
    from omnivmed.trainer.memory_plan import format_plan, workload

    data = cfg.resolved_data()
    try:
        work = workload(
            cfg.model.preset, data.batch_size, data.max_length, data.max_frames, data.max_pixels,
            token_budget=data.token_budget if data.pack else None, max_visual_tokens=data.max_visual_tokens,
        )  # fmt: skip
    except ValueError as err:
        raise ConfigError(f"--dry-run: {err}") from None
    print(format_plan(cfg.model.preset, cfg.run.gpus, cfg.run.gpu_memory, work))


def parse_args(argv: list[str] | None = None) -> tuple[Path | None, dict[str, dict], dict[str, float] | None]:
    """(config file, section -> field overrides, ``--lr`` updates) as ``build_config`` takes them.

    Only options given appear in the overrides. ``--lr`` changes rates of the parts the stage trains
    (``build_config``'s ``lr_update``); ``stage.lr`` in a file says which parts train.
    """
    options = {o.key: o for o in command_line_options()}
    given = vars(build_parser(options.values()).parse_args(argv))
    config_file = given.pop("config", None)
    overrides: dict[str, dict] = {}
    for key, value in given.items():
        option = options[key]
        if typing.get_origin(option.type) is dict:
            value = dict(value)
        overrides.setdefault(option.section, {})[option.name] = value
    lr_update = overrides.get("stage", {}).pop("lr", None)
    return (Path(config_file) if config_file else None), overrides, lr_update


def build_parser(options=None) -> argparse.ArgumentParser:
    """The options of ``command_line_options()`` (or ``options``), grouped by section, plus ``--config``."""
    by_reason: dict[str, list[str]] = {}
    for key, why in file_only_fields().items():
        by_reason.setdefault(why, []).append(key)
    lines = (f"  {', '.join(keys)}: {why}" for why, keys in by_reason.items())
    epilog = "Set only in a config file:\n" + "\n".join(lines)
    parser = OneLineParser(prog=PROG, description=DESCRIPTION, epilog=epilog, allow_abbrev=False, formatter_class=_Formatter)
    parser.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS,
        help="YAML/JSON config file with model/data/run/stage sections; options override it.",
    )  # fmt: skip
    groups = {}
    for option in command_line_options() if options is None else options:
        if option.section not in groups:
            groups[option.section] = parser.add_argument_group(SECTIONS[option.section])
        _add(groups[option.section], option)
    return parser


def check_mix_sources(cfg: TrainConfig) -> None:
    """Every ``data.mix`` source is one the stage's manifests hold (else the order fails deep in run_stage)."""
    if not cfg.data.mix:
        return
    from omnivmed.data.manifest import Manifest, ManifestError
    from omnivmed.trainer.data.sources import TrainDataError, manifests_for_stage

    held: set[str] = set()
    for shards in cfg.data.shards:
        for path in manifests_for_stage(Path(shards), cfg.run.stage):
            try:
                held.update(Manifest.load(path).counts.get("source", {}))
            except ManifestError as err:
                raise TrainDataError(str(err)) from None
    unknown = sorted(set(cfg.data.mix) - held)
    if unknown:
        raise ConfigError(
            f"--mix names sources the manifests do not hold: {', '.join(unknown)}; "
            f"known sources: {', '.join(sorted(held)) or 'none'}"
        )


def fail(message: str) -> typing.NoReturn:
    """One line on stderr, exit status 2."""
    one_line(PROG, message)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help lines wrap at spaces only, so a default such as ``--no-abs-pos`` stays whole."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)


class _Switch(argparse.Action):
    """``--flag`` sets True, its negative (the second option string) sets False."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string == self.option_strings[0])


def _add(group, option: Option) -> None:
    origin, args = typing.get_origin(option.type), typing.get_args(option.type)
    repeated = origin in (list, dict)
    text = f"{option.doc}{' Repeatable.' if repeated else ''} (default: {option.default})".replace("%", "%%")
    common = {"dest": option.key, "default": argparse.SUPPRESS, "help": text}
    if option.type is bool:
        group.add_argument(option.flag, option.negative, action=_Switch, **common)
        return
    if origin is dict:
        parse, metavar = _pair(_scalar(args[0]), _scalar(args[1])), "KEY=VALUE"
    elif origin is tuple:
        parse, metavar = _items(_scalar(args[0]), None if args[-1] is Ellipsis else len(args)), "A,B,..."
    elif origin is list:
        parse, metavar = _scalar(args[0]), "VALUE"
    else:
        parse, metavar = _scalar(option.type), {int: "N", float: "NUMBER"}.get(option.type, option.name.upper())
    group.add_argument(
        option.flag, type=parse, metavar=option.metavar or metavar, action="append" if repeated else "store", **common
    )


def _scalar(tp):
    if tp is str:
        return str
    what = {int: "an integer", float: "a number"}[tp]

    def parse(text: str):
        try:
            return tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None

    return parse


def _pair(key, value):
    def parse(text: str):
        k, sep, v = text.partition("=")
        if not sep or not k:
            raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
        try:
            return key(k), value(v)
        except argparse.ArgumentTypeError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None

    return parse


def _items(item, count: int | None):
    def parse(text: str):
        try:
            values = tuple(item(x.strip()) for x in text.split(","))
        except argparse.ArgumentTypeError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None
        if count is not None and len(values) != count:
            raise argparse.ArgumentTypeError(f"{text!r} is not {count} comma-separated values")
        return values

    return parse


if __name__ == "__main__":  # torchrun -m omnivmed.cli.train
    main()
