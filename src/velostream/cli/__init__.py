"""Command-line tools: `velo-sql` (server, run, validate) and `velo-cli` (client)."""

__all__: list[str] = []
