"""What the ``adray`` command's modules share: the errors shown as one line (exit 2) and common options."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="end with one JSON line of the results")]


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input: the command prints their message, not a traceback."""
    from adray.config import ConfigError
    from adray.data import DataError
    from adray.registry import RegistryError
    from adray.runtime import ResourceError
    from adray.storage import StorageError
    from adray.tune import TuneSpaceError
    from adray.workload import WorkloadError

    return (ConfigError, DataError, RegistryError, WorkloadError, ResourceError, TuneSpaceError, StorageError,
            FileNotFoundError)
