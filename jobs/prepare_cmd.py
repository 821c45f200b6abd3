"""``commer-pipeline prepare``: official LaMP / PerLTQA files -> example and corpus Parquet."""

from __future__ import annotations

import json

import click

from jobs.errors import cli_errors


@click.command("prepare")
@click.argument("task", type=click.Choice(["lamp4", "lamp7", "perltqa"], case_sensitive=False))
@click.option("--source", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of the official files (LaMP: {split}/{split}_questions.json + _outputs.json; "
                   "PerLTQA: perltmem*.json + perltqa*.json).")
@click.option("--output", required=True, type=click.Path(file_okay=False),
              help="Writes {train,dev,test}.parquet, corpus/{split}.parquet and prepare.json here.")
@click.option("--n-test-characters", default=5, show_default=True,
              help="PerLTQA: whole characters held out for test (the paper: 27 train / 5 test).")
@click.option("--dev-fraction", default=0.1, show_default=True, help="PerLTQA: share of train examples moved to dev.")
@click.option("--seed", default=0, show_default=True, help="Seed of the PerLTQA character and dev split.")
@cli_errors
def prepare_command(task: str, source: str, output: str, n_test_characters: int, dev_fraction: float,
                    seed: int) -> None:
    """Convert the official files of TASK into training examples and user corpora."""
    from commer_core.data import prepare_task_data

    counts = prepare_task_data(task.lower(), source, output, n_test_characters=n_test_characters, seed=seed,
                               dev_fraction=dev_fraction)
    click.echo(json.dumps(counts, indent=2, sort_keys=True))
