"""File connectors: `file_source` (CSV, JSON lines; glob; watch) and `file_sink`."""

from velostream.datasource.file.sink import FileSink, FileSinkConfig
from velostream.datasource.file.source import FilePosition, FileSource, FileSourceConfig

__all__ = ["FilePosition", "FileSink", "FileSinkConfig", "FileSource", "FileSourceConfig"]
