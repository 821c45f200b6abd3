"""Click options that several commands share, defined once."""

from __future__ import annotations

import click

bf16_option = click.option(
    "--bf16", is_flag=True,
    help="bfloat16 autocast; weights stay fp32. Fast on CUDA and on CPUs with AVX512-BF16 or AMX; elsewhere "
         "torch emulates bf16 and is many times slower than fp32 (the command then warns).")
