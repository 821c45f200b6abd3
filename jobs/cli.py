"""The ``commer-pipeline`` command group.

Each subcommand lives in its own module under ``jobs/`` and is imported only when
invoked, so ``--help`` stays fast and a broken optional dependency of one command
cannot break the others.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import signal
import sys

import click

from pipelines.faults import pause_point
from pipelines.interrupts import EXIT_CODES, Interrupted, interrupt_on_signals, received

# name -> (module, attribute, one-line help shown by `commer-pipeline --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "compress": ("jobs.compress_cmd", "compress", "Nightly Beam job: Parquet user corpora -> Parquet embedding store."),
    "inspect": ("jobs.inspect_cmd", "inspect", "Print a store's manifest and a few rows."),
    "prepare": ("jobs.prepare_cmd", "prepare_command", "Convert official LaMP / PerLTQA files to examples + corpora."),
    "train": ("jobs.train_cmd", "train", "Train a compressor (or a baseline) and write a checkpoint."),
    "evaluate": ("jobs.evaluate_cmd", "evaluate", "Perplexity / ROUGE of checkpoints and baselines, with plots."),
    "generate": ("jobs.generate_cmd", "generate", "Generate personalized text from a store + checkpoint."),
    "personalization-check": ("jobs.personalization_cmd", "personalization_check",
                              "Own vs another user's stored prompt through compress -> store -> serving."),
    "bench": ("jobs.bench.command", "bench", "Measure compress throughput against baselines and the machine's peak."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _, _) in COMMANDS.items() if importlib.util.find_spec(module)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        self.resolved = name
        pause_point("command_import")  # the command's imports (torch, Beam) take seconds: Ctrl-C lands here
        module, attr, _ = COMMANDS[name]
        if importlib.util.find_spec(module) is None:
            return None
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """ComMer personalization: compress user documents into soft prompts, merge them per user,
    and personalize a frozen LLM with them."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Console-script entry point.

    Ctrl-C or SIGTERM that no command handles itself (while Python imports a command's
    dependencies, say) ends in one line and exit 130 / 143, as inside a run, not in
    Click's "Aborted!" and exit 1.
    """
    with interrupt_on_signals(once=False):
        try:
            code = cli.main(standalone_mode=False)
        except click.exceptions.Abort:
            click.echo(interrupted_line(getattr(cli, "resolved", None)), err=True)
            sys.exit(EXIT_CODES[received() or signal.SIGINT])
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def interrupted_line(command: str | None) -> str:
    """What an interrupt outside a command's own handling leaves true: compress had staged nothing yet."""
    if command == "compress":
        return Interrupted(received() or signal.SIGINT).line()
    return "commer: interrupted"


if __name__ == "__main__":
    main()
