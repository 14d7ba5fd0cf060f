"""Progress of commands that walk every row: a bar on a terminal, plain lines
otherwise (at most one per tenth of the work, so a log stays short). The
command says the counts at the end itself."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from extauth.cli._base import say

STEPS = 10


@contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``, to call as each batch of ``n`` rows is done."""
    stream = sys.stderr
    if stream.isatty():
        with click.progressbar(length=total, label=label, file=stream, show_pos=True,
                               show_percent=True, show_eta=True) as bar:
            yield bar.update
        return
    done = 0
    shown = -1

    def advance(n: int) -> None:
        nonlocal done, shown
        done += n
        step = min(STEPS, done * STEPS // total) if total else STEPS
        if step > shown:
            shown = step
            say(f"{label}: {done} of {total}")

    yield advance
