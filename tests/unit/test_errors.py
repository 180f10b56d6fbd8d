"""The exception tree, the error taxonomy and `classify` for ours and third-party errors."""

from __future__ import annotations

import ast
import errno
import inspect
import json
import re
from pathlib import Path

import confluent_kafka
import duckdb
import pyarrow as pa
import pytest

from velostream import errors
from velostream.errors import (
    ApiProblem,
    AuthError,
    BatchFailedError,
    BrokerConnectionError,
    ConfigurationError,
    DeadLetterError,
    ErrorKind,
    InternalError,
    JobConflictError,
    JobLimitError,
    JobStateError,
    OperationTimeoutError,
    PlanError,
    QueryExecutionError,
    RecordError,
    ReplayError,
    ResourceExhaustedError,
    RetryableBatchError,
    SandboxError,
    SchemaError,
    Severity,
    SinkConflictError,
    SinkError,
    SourceError,
    SqlValidationError,
    Stage,
    StateIncompatibleError,
    VelostreamError,
    classify,
    default_severity,
)

EXCEPTIONS: dict[type[VelostreamError], ErrorKind] = {
    VelostreamError: ErrorKind.INTERNAL,
    ConfigurationError: ErrorKind.CONFIGURATION,
    SqlValidationError: ErrorKind.PARSE,
    RecordError: ErrorKind.PARSE,
    SchemaError: ErrorKind.SCHEMA,
    QueryExecutionError: ErrorKind.EXECUTION,
    SourceError: ErrorKind.IO,
    SinkError: ErrorKind.IO,
    BrokerConnectionError: ErrorKind.CONNECTION,
    OperationTimeoutError: ErrorKind.TIMEOUT,
    ResourceExhaustedError: ErrorKind.RESOURCE,
    DeadLetterError: ErrorKind.IO,
    JobStateError: ErrorKind.CONFIGURATION,
    InternalError: ErrorKind.INTERNAL,
    PlanError: ErrorKind.PARSE,
    SandboxError: ErrorKind.PARSE,
    StateIncompatibleError: ErrorKind.CONFIGURATION,
    JobConflictError: ErrorKind.CONFIGURATION,
    SinkConflictError: ErrorKind.CONFIGURATION,
    JobLimitError: ErrorKind.RESOURCE,
    BatchFailedError: ErrorKind.INTERNAL,
    RetryableBatchError: ErrorKind.INTERNAL,
    ReplayError: ErrorKind.EXECUTION,
    ApiProblem: ErrorKind.CONFIGURATION,
    AuthError: ErrorKind.CONFIGURATION,
}


def _make(cls: type[VelostreamError], message: str) -> VelostreamError:
    """An instance of `cls` with `message`, whatever else its constructor needs."""
    if cls is RetryableBatchError:
        return RetryableBatchError(message, failed_kind=ErrorKind.TYPE)
    if cls is ReplayError:
        return ReplayError(message, failures=[])
    if cls is ApiProblem:
        return ApiProblem(400, "Bad request", message)
    return cls(message)


def test_stages_are_the_designed_set() -> None:
    assert [s.value for s in Stage] == [
        "deploy",
        "source",
        "deserialize",
        "process",
        "sink",
        "commit",
        "dlq",
        "job",
    ]


def test_kinds_are_the_fixed_taxonomy() -> None:
    assert [k.value for k in ErrorKind] == [
        "ParseError",
        "TypeError",
        "ExecutionError",
        "SchemaError",
        "IOError",
        "ConnectionError",
        "TimeoutError",
        "ConfigurationError",
        "ResourceError",
        "InternalError",
    ]


def test_enum_members_are_their_label_values() -> None:
    assert str(Stage.SINK) == "sink"
    assert Stage("sink") is Stage.SINK
    assert f"{ErrorKind.IO}" == "IOError"
    assert Severity("user") is Severity.USER


@pytest.mark.parametrize(
    ("kind", "severity"),
    [
        (ErrorKind.PARSE, Severity.USER),
        (ErrorKind.TYPE, Severity.USER),
        (ErrorKind.EXECUTION, Severity.USER),
        (ErrorKind.SCHEMA, Severity.USER),
        (ErrorKind.CONFIGURATION, Severity.USER),
        (ErrorKind.IO, Severity.SYSTEM),
        (ErrorKind.CONNECTION, Severity.SYSTEM),
        (ErrorKind.TIMEOUT, Severity.SYSTEM),
        (ErrorKind.RESOURCE, Severity.SYSTEM),
        (ErrorKind.INTERNAL, Severity.SYSTEM),
    ],
)
def test_default_severity(kind: ErrorKind, severity: Severity) -> None:
    assert default_severity(kind) is severity


# --- the tree ---------------------------------------------------------------------------


def test_every_exported_exception_is_covered_here() -> None:
    exported = {
        obj
        for name in errors.__all__
        if inspect.isclass(obj := getattr(errors, name)) and issubclass(obj, BaseException)
    }
    assert exported == set(EXCEPTIONS)


@pytest.mark.parametrize(("cls", "kind"), EXCEPTIONS.items())
def test_each_exception_derives_from_the_root_and_has_its_kind(
    cls: type[VelostreamError], kind: ErrorKind
) -> None:
    assert issubclass(cls, VelostreamError)
    exc = _make(cls, "went wrong")
    assert exc.kind is kind
    assert classify(exc) is kind
    assert exc.severity is default_severity(kind)
    assert str(exc) == exc.message == "went wrong"


def test_sql_validation_error_is_a_configuration_error() -> None:
    assert issubclass(SqlValidationError, ConfigurationError)


def _drawn_parents() -> dict[str, str]:
    """Each class drawn in the module docstring's tree, mapped to the class drawn above it."""
    assert errors.__doc__ is not None
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        match = re.match(r"^\s*((?:[│ ]   )*)(?:[├└]── )?(\w+Error|\w+Problem)\b", line)
        if match is None:
            continue
        depth = len(match.group(1)) // 4 + (1 if "──" in line else 0)
        name = match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


@pytest.mark.parametrize("cls", EXCEPTIONS)
def test_the_docstring_tree_draws_every_exception_under_its_base(
    cls: type[VelostreamError],
) -> None:
    parents = _drawn_parents()
    if cls is VelostreamError:
        assert cls.__name__ not in parents
        return
    assert cls.__name__ in parents, f"{cls.__name__} is missing from the drawn tree"
    base = next(b for b in cls.__mro__[1:] if issubclass(b, VelostreamError))
    assert parents[cls.__name__] == base.__name__


def test_no_exception_class_lives_outside_errors_py() -> None:
    """Every exception the package defines is in errors.py (and so in its tree)."""
    import velostream

    root = Path(velostream.__file__).parent
    strays = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "errors.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                (isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception", "Problem"))))
                or (isinstance(b, ast.Attribute) and b.attr.endswith(("Error", "Exception")))
                for b in node.bases
            ):
                strays.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    assert strays == []


def test_exceptions_carry_their_context() -> None:
    exc = SourceError(
        "cannot read", job="orders", stage=Stage.SOURCE, source="orders.csv", position="17"
    )
    assert (exc.job, exc.stage, exc.source, exc.position) == (
        "orders",
        Stage.SOURCE,
        "orders.csv",
        "17",
    )
    bare = SinkError("x")
    assert (bare.job, bare.stage, bare.source, bare.position) == (None, None, None, None)


def test_sql_validation_error_lists_its_problems() -> None:
    assert SqlValidationError("bad").problems == ["bad"]
    exc = SqlValidationError("2 problems", problems=["a", "b"], job="app")
    assert exc.problems == ["a", "b"]
    assert exc.job == "app"


def test_wrapping_keeps_the_cause() -> None:
    try:
        try:
            raise OSError(errno.ENOENT, "missing")
        except OSError as inner:
            raise SourceError("cannot open orders.csv") from inner
    except SourceError as outer:
        assert isinstance(outer.__cause__, OSError)
        assert classify(outer) is ErrorKind.IO


# --- classify: built-in exceptions --------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (MemoryError(), ErrorKind.RESOURCE),
        (TimeoutError(), ErrorKind.TIMEOUT),
        (ConnectionRefusedError(), ErrorKind.CONNECTION),
        (ConnectionResetError(), ErrorKind.CONNECTION),
        (BrokenPipeError(), ErrorKind.CONNECTION),
        (FileNotFoundError(errno.ENOENT, "missing"), ErrorKind.IO),
        (PermissionError(errno.EACCES, "denied"), ErrorKind.IO),
        (OSError(errno.ENOSPC, "No space left on device"), ErrorKind.RESOURCE),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), ErrorKind.RESOURCE),
        (OSError(errno.ENOMEM, "Cannot allocate memory"), ErrorKind.RESOURCE),
        (OSError(errno.EMFILE, "Too many open files"), ErrorKind.RESOURCE),
        (OSError("no errno"), ErrorKind.IO),
        (json.JSONDecodeError("Expecting value", "x", 0), ErrorKind.PARSE),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), ErrorKind.PARSE),
        (TypeError(), ErrorKind.TYPE),
        (ValueError(), ErrorKind.TYPE),
        (OverflowError(), ErrorKind.TYPE),
        (ZeroDivisionError(), ErrorKind.TYPE),
        (KeyError("k"), ErrorKind.INTERNAL),
        (RuntimeError(), ErrorKind.INTERNAL),
        (AssertionError(), ErrorKind.INTERNAL),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_classify_builtin(exc: BaseException, kind: ErrorKind) -> None:
    assert classify(exc) is kind


# --- classify: third-party errors, every class of each library ----------------------------------


def subclasses(root: type[BaseException]) -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    stack = [root]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in found:
                found.add(sub)
                stack.append(sub)
    return found


def instantiate(cls: type[BaseException]) -> BaseException:
    return cls.__new__(cls)


DUCKDB_KINDS = {
    "ConversionException": ErrorKind.TYPE,
    "InvalidTypeException": ErrorKind.TYPE,
    "OutOfRangeException": ErrorKind.TYPE,
    "ParserException": ErrorKind.PARSE,
    "SyntaxException": ErrorKind.PARSE,
    "BinderException": ErrorKind.SCHEMA,
    "CatalogException": ErrorKind.SCHEMA,
    "OutOfMemoryException": ErrorKind.RESOURCE,
    "IOException": ErrorKind.IO,
    "HTTPException": ErrorKind.IO,
    "InternalException": ErrorKind.INTERNAL,
    "FatalException": ErrorKind.INTERNAL,
}


def test_every_duckdb_error_maps_to_a_kind() -> None:
    classes = subclasses(duckdb.Error)
    assert {c.__name__ for c in classes} >= set(DUCKDB_KINDS)
    for cls in classes:
        expected = DUCKDB_KINDS.get(cls.__name__, ErrorKind.EXECUTION)
        assert classify(instantiate(cls)) is expected, cls


def test_real_duckdb_failures_are_classified() -> None:
    con = duckdb.connect()
    try:
        with pytest.raises(duckdb.Error) as conversion:
            con.sql("SELECT CAST('abc' AS INTEGER)").fetchall()
        assert classify(conversion.value) is ErrorKind.TYPE
        with pytest.raises(duckdb.Error) as parse:
            con.sql("SELEC 1")
        assert classify(parse.value) is ErrorKind.PARSE
        with pytest.raises(duckdb.Error) as binder:
            con.sql("SELECT no_such_column FROM (SELECT 1 AS a)").fetchall()
        assert classify(binder.value) is ErrorKind.SCHEMA
        with pytest.raises(duckdb.Error) as catalog:
            con.sql("SELECT * FROM no_such_table").fetchall()
        assert classify(catalog.value) is ErrorKind.SCHEMA
    finally:
        con.close()


PYARROW_KINDS = {
    "ArrowInvalid": ErrorKind.PARSE,
    "ArrowTypeError": ErrorKind.TYPE,
    "ArrowNotImplementedError": ErrorKind.PARSE,
    "ArrowMemoryError": ErrorKind.RESOURCE,
}


def test_every_pyarrow_error_maps_to_a_kind() -> None:
    classes = {c for c in subclasses(pa.ArrowException) if c.__module__.startswith("pyarrow")}
    assert {c.__name__ for c in classes} >= set(PYARROW_KINDS)
    for cls in classes:
        expected = PYARROW_KINDS.get(cls.__name__, ErrorKind.IO)
        assert classify(instantiate(cls)) is expected, cls


def test_a_real_pyarrow_failure_is_classified() -> None:
    with pytest.raises(pa.ArrowInvalid) as invalid:
        pa.array(["x"]).cast(pa.int64())
    assert classify(invalid.value) is ErrorKind.PARSE


def test_kafka_errors_are_connection_errors() -> None:
    error = confluent_kafka.KafkaError(confluent_kafka.KafkaError._TRANSPORT)
    assert classify(confluent_kafka.KafkaException(error)) is ErrorKind.CONNECTION


def test_every_kind_value_is_a_kind() -> None:
    for exc in (ValueError(), OSError(), SinkError("x"), duckdb.Error(), pa.ArrowException()):
        assert classify(exc) in set(ErrorKind)
