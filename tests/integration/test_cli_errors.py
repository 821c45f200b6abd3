"""One error hierarchy (CommerError) and one CLI error path (jobs.errors.cli_errors)."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from commer_core.backbone import BackboneError
from commer_core.checkpoint import CheckpointError
from commer_core.data import DataFormatError
from commer_core.errors import CommerError
from commer_core.store import StoreError
from commer_core.synthetic import write_synthetic_lamp
from commer_core.training import TrainingError
from jobs.cli import cli
from jobs.errors import cli_errors
from pipelines.commit import CommitError
from pipelines.compress import CompressError
from pipelines.read_corpus import CorpusReadError
from schemas import SchemaError


@pytest.mark.parametrize("error, builtin", [
    (SchemaError, ValueError), (BackboneError, RuntimeError), (CheckpointError, ValueError),
    (StoreError, ValueError), (DataFormatError, ValueError), (TrainingError, ValueError),
    (CorpusReadError, OSError), (CompressError, RuntimeError), (CommitError, RuntimeError),
])
def test_every_domain_error_is_a_commer_error_and_keeps_its_builtin(error, builtin):
    assert issubclass(error, CommerError) and issubclass(error, builtin)


def test_schemas_stays_below_commer_core():
    code = "import sys, schemas; assert not [m for m in sys.modules if m.startswith('commer_core')]"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_imports_neither_pyarrow_nor_torch():
    code = ("import sys; from click.testing import CliRunner; from jobs.cli import cli\n"
            "for args in (['--help'], ['train', '--help'], ['inspect', '--help']):\n"
            "    assert CliRunner().invoke(cli, args).exit_code == 0, args\n"
            "assert 'pyarrow' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def _toy_cli(exc: BaseException) -> click.Group:
    """A group shaped like `commer-pipeline` (global -v) with one command that raises ``exc``."""

    @click.group()
    @click.option("-v", "--verbose", count=True)
    def group(verbose: int) -> None:
        pass

    @group.command("boom")
    @cli_errors
    def boom() -> None:
        raise exc

    return group


@pytest.mark.parametrize("exc", [StoreError("no store at /x"), BackboneError("bad model"),
                                 ValueError("bad value"), FileNotFoundError(2, "No such file", "/x")])
def test_expected_errors_become_one_line(exc):
    result = CliRunner().invoke(_toy_cli(exc), ["boom"])
    assert result.exit_code == 1
    assert result.output == f"Error: {exc}\n"


def test_verbose_adds_the_traceback():
    result = CliRunner().invoke(_toy_cli(CheckpointError("altered file")), ["-v", "boom"])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.output and "raise exc" in result.output
    assert result.output.rstrip().splitlines()[-1] == "Error: altered file"


def test_click_errors_and_bugs_pass_through():
    usage = CliRunner().invoke(_toy_cli(click.UsageError("give --x")), ["boom"])
    assert usage.exit_code == 2 and "Error: give --x" in usage.output
    bug = CliRunner().invoke(_toy_cli(KeyError("oops")), ["boom"])
    assert isinstance(bug.exception, KeyError)


def test_train_with_an_unknown_base_model_prints_one_error_line(tmp_path):
    write_synthetic_lamp(tmp_path / "raw", users={"train": 2, "dev": 1})
    prepared = CliRunner().invoke(cli, ["prepare", "lamp7", "--source", str(tmp_path / "raw"),
                                        "--output", str(tmp_path / "prep")])
    assert prepared.exit_code == 0 and json.loads(prepared.output)["train"]["examples"] > 0
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "prep"), "--output", str(tmp_path / "run"),
                                      "--base-model", "nonsense", "--steps", "1", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, BackboneError)
    assert result.output.startswith("Error: ") and "'nonsense'" in result.output
    assert result.output.count("Error: ") == 1


def test_inspect_of_a_missing_store_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path / 'nowhere'} is not a directory (no store there)\n"


@pytest.fixture(scope="module")
def examples_file(tmp_path_factory):
    """Two users' labelled examples as an examples Parquet file (what `prepare` writes)."""
    from commer_core.data import Document, Example, write_examples_parquet

    path = tmp_path_factory.mktemp("evaluate") / "dev.parquet"
    write_examples_parquet([Example(f"e{i}", f"u{i}", f"write about topic {i}", f"topic {i} is fun",
                                    [Document(f"d{i}", f"I like topic {i}.")]) for i in range(2)], path)
    return path


def _assert_one_error_line(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("Error: ") == 1, result.output
    assert result.output.rstrip().splitlines()[-1].startswith("Error: ")
    for fragment in fragments:
        assert fragment in result.output


def test_evaluate_with_an_unknown_base_model_prints_one_error_line(examples_file, tmp_path):
    """BackboneError (a RuntimeError) used to escape evaluate's (TrainingError, ValueError) tuple."""
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(examples_file), "--baseline", "none",
                                      "--base-model", "nonsense", "--max-examples", "2", "--generate", "0",
                                      "--no-swap", "--no-progress", "--output", str(tmp_path / "out")])
    assert not isinstance(result.exception, BackboneError)
    _assert_one_error_line(result, "'nonsense'")


def test_evaluate_with_an_altered_checkpoint_prints_one_error_line(examples_file, tiny_checkpoint, tmp_path):
    import shutil

    altered = tmp_path / "altered"
    shutil.copytree(tiny_checkpoint, altered)
    config = altered / "commer_config.json"
    config.write_text(config.read_text().replace("}", ' }', 1))  # same JSON, different bytes
    result = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(altered), "--data", str(examples_file),
                                      "--baseline", "none", "--max-examples", "2", "--generate", "0", "--no-swap",
                                      "--no-progress", "--output", str(tmp_path / "out")])
    assert not isinstance(result.exception, CheckpointError)
    _assert_one_error_line(result, str(altered))
