"""The compress options, declared once in ``pipelines.options``: both parsers agree, and every
default the help text states is the code's default."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from commer_core.defaults import default_batch_tokens, default_max_batch_size
from pipelines.options import CompressParams, argument_parser, option_specs, parse_args
from pipelines.user_buckets import auto_bucket_count


def _squeezed(text: str) -> str:
    """Help text without white space, so line wrapping does not matter."""
    return re.sub(r"\s+", "", text)


def _stated_default(help_text: str) -> str | None:
    match = re.search(r"\[default: (.*)\]$", help_text)
    return match.group(1) if match else None


def _numbers(text: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", text)]


@pytest.fixture(scope="module")
def click_help() -> str:
    from jobs.cli import cli

    result = CliRunner().invoke(cli, ["compress", "--help"])
    assert result.exit_code == 0, result.output
    return _squeezed(result.output)


def test_both_entry_points_show_every_option_with_the_same_help(click_help):
    argparse_help = _squeezed(argument_parser().format_help())
    for spec in option_specs():
        for flag in spec.flags:
            assert flag in click_help and flag in argparse_help, flag
        assert _squeezed(spec.help) in click_help, spec.name
        assert _squeezed(spec.help) in argparse_help, spec.name


def test_every_stated_default_is_the_codes():
    """A literal default is the field's default; a default in words names the code's numbers."""
    in_words = {
        "batch_tokens": [default_batch_tokens("cpu"), 2, default_batch_tokens("cuda"), 100],  # "2-core", "H100"
        "max_batch_size": [default_max_batch_size("cpu"), default_max_batch_size("cuda")],
    }
    for spec in option_specs():
        stated = _stated_default(spec.help)
        if spec.name in in_words:
            assert _numbers(stated) == in_words[spec.name], (spec.name, stated)
        elif spec.name == "user_buckets":
            per_bucket, elsewhere = _numbers(stated)
            assert auto_bucket_count(per_bucket, "DirectRunner") == 1
            assert auto_bucket_count(per_bucket + 1, "DirectRunner") == 2
            assert auto_bucket_count(10 * per_bucket, "DataflowRunner") == elsewhere
        elif spec.default is not None and not isinstance(spec.default, bool):
            assert stated == str(spec.default), spec.name
        else:  # None and flags: the help says what None means, or nothing
            assert spec.default is None or stated is None, spec.name


def test_both_parsers_give_the_same_params():
    from jobs.compress_cmd import compress

    argv = ["--input", "in/*.parquet", "--output", "out", "--batch-tokens", "96", "--share-model",
            "--compile", "--user-buckets", "3", "--previous", "out", "--full-snapshot", "--keep-versions", "4"]
    params, beam_args = parse_args([*argv, "--runner=DirectRunner"])
    click_params = compress.make_context("compress", [*argv, "--runner=DirectRunner"]).params
    assert beam_args == ["--runner=DirectRunner"] and click_params.pop("beam_args") == ("--runner=DirectRunner",)
    assert CompressParams(**click_params) == params
    assert params.large_model and params.compile_model and params.batch_tokens == 96
    assert parse_args([])[0] == CompressParams()


@pytest.mark.parametrize("argv", [["--batch-tokens", "0"], ["--progress-every", "-1"], ["--device", "tpu"]])
def test_both_parsers_refuse_out_of_range_values(argv, capsys):
    from jobs.compress_cmd import compress

    with pytest.raises(SystemExit):
        parse_args(argv)
    assert CliRunner().invoke(compress, argv).exit_code == 2
