"""The CLI's one error path: expected failures become one ``Error:`` line, not a traceback.

Why one decorator instead of a ``try/except`` tuple per command: the tuples drifted
(``train`` missed ``BackboneError``, so a bad ``--base-model`` ended in a traceback).
Every deliberate error derives from :class:`commer_core.errors.CommerError`, so one
``except`` covers every command, including errors added later.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def expected_errors() -> tuple[type[Exception], ...]:
    """What a command may fail with for a reason the user can fix: our own errors, bad
    values (several libraries raise ValueError for bad input), missing or unreadable files.
    """
    from commer_core.errors import CommerError  # here, not at the top: `--help` stays free of pyarrow

    return (CommerError, ValueError, OSError)


def verbosity() -> int:
    """The global ``-v`` count of the running ``commer-pipeline`` invocation (0 outside one)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return 0
    return int(ctx.find_root().params.get("verbose") or 0)


def cli_errors(func: F) -> F:
    """Decorate a command's callback (put it right above ``def``): any of
    :func:`expected_errors` becomes ``Error: <message>`` and exit status 1; the
    traceback is printed to stderr first only with ``-v``. Click's own exceptions
    and unexpected errors (bugs) pass through unchanged.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, expected_errors()):
                raise
            raise _one_line(exc) from exc

    return wrapper  # type: ignore[return-value]


def _one_line(exc: BaseException) -> click.ClickException:
    if verbosity() > 0:
        click.echo(traceback.format_exc().rstrip(), err=True)
    return click.ClickException(str(exc) or type(exc).__name__)
