"""Check an application against the connector types registered here.

`velostream.sql.check.check_application` is handed its connector types because the
SQL layer may not import this one; this is that check with the registry's types, as
`velo-sql validate`, `velo-sql run` and server deploys use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from velostream.datasource.registry import connector_catalog
from velostream.sql import check
from velostream.sql.model import Application

__all__ = ["check_application"]


def check_application(
    text: str, *, base_dir: Path, source_name: str, env: Mapping[str, str] | None = None
) -> Application:
    """The parsed and planned application; `SqlValidationError` lists every problem.

    The types registered at the time of the call are the ones accepted. `base_dir`
    resolves relative `config_file` paths (the application file's folder). `env` is what
    `${VAR}` resolves from: a server passes only its operator's variables; None is the
    process environment (a local `velo-sql run` or `validate`, trusted like a shell).
    """
    return check.check_application(
        text, connectors=connector_catalog(), base_dir=base_dir, source_name=source_name, env=env
    )
