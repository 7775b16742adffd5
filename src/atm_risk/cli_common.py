"""What every ``atm-risk`` sub-command shares: the consoles, exit codes and context."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, NoReturn

import typer
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker

from atm_risk import migrate
from atm_risk.app import Context
from atm_risk.files import atomic_path

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

EXIT_REJECTED = 1  # some rows were rejected (valid ones written unless --strict)
EXIT_USAGE = 2  # the input as a whole is unusable; nothing written
EXIT_NO_SPACE = 3  # the disk of the database (or of an output file) is full

_NO_SPACE = ("database or disk is full", "no space left on device", "could not extend file")


def no_space_message(exc: BaseException) -> str | None:
    """A clear message when ``exc`` (or its cause) says the disk is full, else None.

    SQLite says "database or disk is full", PostgreSQL "could not extend file ... No space
    left on device", a file write raises OSError ENOSPC. The database rolled the
    transaction back, so nothing of the command's unit of work was written."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for cause in chain:
        text = str(cause).strip()
        full = isinstance(cause, OSError) and cause.errno == errno.ENOSPC
        if full or any(marker in text.lower() for marker in _NO_SPACE):
            first = text.splitlines()[0] if text else "ENOSPC"
            return (
                f"out of disk space ({first}); the unit of work was rolled back, so nothing "
                "partial was written or published. Free space and run the command again."
            )
    return None


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err.print(f"error: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def context_of(ctx: typer.Context) -> Context:
    obj = ctx.obj
    assert isinstance(obj, Context)
    return obj


def sessions_of(c: Context) -> sessionmaker[Session]:
    try:
        return c.sessions
    except migrate.SchemaNotReadyError as exc:
        fail(str(exc))


def emit(write: Callable[[IO[str]], None], output: Path | None, *, what: str = "") -> None:
    """Write to stdout, or atomically to ``output`` (a temporary name, renamed when done)."""
    if output is None:
        write(sys.stdout)
        return
    with atomic_path(output) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
        write(fh)
    out.print(f"wrote {what + ' to ' if what else ''}{output}", markup=False)
