"""The job server: lifecycle, processors, failure strategies and dead letters."""

__all__: list[str] = []
