"""Ctrl-C (SIGINT) and SIGTERM during a run: one true line, exit 130 / 143, no staging left.

:func:`interrupt_on_signals` (the launchers' context) turns both signals into a
``KeyboardInterrupt`` in the main thread and remembers which signal came. Beam wraps a
``KeyboardInterrupt`` raised inside a bundle in a ``RuntimeError``, so
:func:`pipelines.run.run_job` asks :func:`received` rather than the exception's type,
removes the run's staged version (unless ``LATEST`` already names it) and raises
:class:`Interrupted`, whose :meth:`~Interrupted.line` says what is true. A second signal
while the run cleans up is noted, not raised, so the clean-up finishes.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: Exit status per signal (128 + its number, as shells report them).
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

_received: int | None = None


class Interrupted(BaseException):
    """The run was stopped by ``signum``; ``version`` is set when it had committed first.

    A BaseException (like KeyboardInterrupt), so no ``except Exception`` on the way up
    turns an interrupt into an ordinary failure.
    """

    def __init__(self, signum: int, output: str = "", version: str | None = None):
        super().__init__(signum, output, version)
        self.signum, self.output, self.version = signum, output, version

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + int(self.signum))

    def line(self) -> str:
        if self.version:
            return (f"commer: interrupted after the commit; {self.output} version {self.version} is committed "
                    "(LATEST names it)")
        return "commer: interrupted; nothing committed, LATEST unchanged"


def received() -> int | None:
    """The signal that interrupted the run under :func:`interrupt_on_signals`, None if none."""
    return _received


def _handler(signum: int, frame) -> None:
    global _received
    if _received is None:
        _received = signum
        raise KeyboardInterrupt
    # a second Ctrl-C / SIGTERM while the run removes its staging: noted, not raised


def _handler_every(signum: int, frame) -> None:
    global _received
    _received = _received or signum
    raise KeyboardInterrupt


@contextmanager
def interrupt_on_signals(once: bool = True) -> Iterator[None]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` in the main thread while inside.

    ``once``: only the first signal raises (a run cleaning up its staging is not cut short);
    otherwise every one does (the CLI around its commands: a second Ctrl-C still stops a
    process whose first one a library swallowed). Handle :class:`Interrupted` (and a
    ``KeyboardInterrupt`` raised outside the run) inside it: :func:`received` is reset on the
    way out. Outside the main thread (signals cannot be handled there) it does nothing.
    """
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received = None
    previous = {sig: signal.getsignal(sig) for sig in EXIT_CODES}
    for sig in EXIT_CODES:
        signal.signal(sig, _handler if once else _handler_every)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _received = None
