"""`velo-sql init NAME`: a new application folder that runs at once.

`NAME/app.sql` filters and projects `NAME/data/trades.csv` (a dozen rows, five of
them kept) into `NAME/output/big_trades.csv`; `NAME/README.md` says how to validate
and run it. Its paths are relative to its folder, so `velo-sql run NAME/app.sql` works
from anywhere. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

__all__ = ["OUTPUT", "app_name", "create_application", "is_free"]

OUTPUT = "output/big_trades.csv"

_APP_SQL = """\
-- {name}: keep the trades worth 10,000 or more, with their value.
-- Paths are relative to this file's folder: run it from anywhere.
-- @app: {name}
-- @version: 1.0.0

CREATE STREAM big_trades AS
SELECT id, symbol, price * quantity AS notional
FROM trades
WHERE price * quantity >= 10000
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades.csv',
    'trades.format' = 'csv',
    'big_trades.type' = 'file_sink',
    'big_trades.path' = './{output}',
    'big_trades.format' = 'csv'
);
"""

_TRADES_CSV = """\
id,symbol,price,quantity
1,AAPL,189.5,20
2,MSFT,402.25,30
3,GOOG,141.8,10
4,AAPL,190.0,100
5,TSLA,250.4,5
6,NVDA,875.0,15
7,MSFT,401.0,2
8,AMZN,178.2,60
9,GOOG,142.5,40
10,NVDA,880.5,1
11,TSLA,248.0,50
12,AMZN,179.0,3
"""

_README = """\
# {name}

A Velostream application made by `velo-sql init`: `app.sql` reads `data/trades.csv`
(12 trades) and writes the 5 worth 10,000 or more (`price * quantity`) to
`{output}`, with their id, symbol and value.

Relative paths in `app.sql` are taken from this folder, so the commands below work
from any folder (give the path to `app.sql` from there). From the folder that holds
`{folder}/`:

```
velo-sql validate {app_sql}    # checks the SQL, the connectors and the columns
velo-sql run {app_sql}         # runs it: a summary, then {folder}/{output}
cat {output_path}
```

To run it on a server, start one (`velo-sql server --port 8080 --data-dir velo-data`)
and deploy it with `velo-cli deploy {app_sql}`; its folder must lie under the
server's roots (by default its working directory and data dir; `--allow-path DIR`).

Change the `WHERE` clause or the columns and run it again; each run reads
`data/trades.csv` from the start and writes the output afresh.
"""

_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def app_name(folder: Path) -> str:
    """An `@app` name from the folder's name: letters, digits, '_', '.', '-'."""
    name = _NOT_A_NAME.sub("_", folder.resolve().name) or "app"
    return name if name[0].isalnum() or name[0] == "_" else f"app_{name}"


def create_application(folder: Path) -> list[Path]:
    """Write the sample application into `folder` (created); return the files written.

    The caller checks first that `folder` is not there or is empty (`is_free`).
    """
    name = app_name(folder)
    shown = folder.as_posix().rstrip("/") or "."
    files = {
        folder / "app.sql": _APP_SQL.format(name=name, output=OUTPUT),
        folder / "data" / "trades.csv": _TRADES_CSV,
        folder / "README.md": _README.format(
            name=name,
            folder=shown,
            output=OUTPUT,
            app_sql=shlex.quote(f"{shown}/app.sql"),
            output_path=shlex.quote(f"{shown}/{OUTPUT}"),
        ),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)


def is_free(folder: Path) -> bool:
    """Whether `folder` can be made into an application: absent, or an empty folder."""
    if not folder.exists():
        return True
    return folder.is_dir() and not any(folder.iterdir())
