"""The per-job families' own exposition says exactly what prometheus_client would.

`JobFamilies.render` bypasses prometheus_client's formatter for speed; these tests parse
what it renders with prometheus_client's own parsers (text and OpenMetrics) and compare
every sample with what the registry collects, for any sequence of updates.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from velostream.observability.job_metrics import (
    COUNTERS,
    DLQ_RECORDS,
    JOB_STATUSES,
    RECORDS_IN,
    JobCounts,
    JobFamilies,
)
from velostream.observability.metrics import MetricsProvider

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

JOB_NAMES = st.sampled_from(["a", "b_2", 'quo"te', "back\\slash", "new\nline", "ünï"])
UPDATES = st.lists(
    st.one_of(
        st.tuples(st.just("add"), JOB_NAMES, st.integers(0, len(COUNTERS) - 1), st.integers(0, 9)),
        st.tuples(st.just("observe"), JOB_NAMES, st.floats(0, 30, allow_nan=False)),
        st.tuples(st.just("status"), JOB_NAMES, st.sampled_from(JOB_STATUSES)),
        st.tuples(st.just("remove"), JOB_NAMES),
    ),
    max_size=40,
)


def registered(updates: list[tuple]) -> tuple[JobFamilies, CollectorRegistry]:  # type: ignore[type-arg]
    """Families after `updates`, and a registry that holds them."""
    families = JobFamilies()
    for op, job, *args in updates:
        if op == "add":
            families.add(job, args[0], args[1])
        elif op == "observe":
            families.observe_batch(job, args[0])
        elif op == "status":
            families.set_status(job, args[0])
        else:
            families.remove(job)
    registry = CollectorRegistry()
    registry.register(families)
    return families, registry


def samples(families: object, *, skip_created: bool = True) -> Samples:
    out: Samples = {}
    for family in families:  # type: ignore[attr-defined]
        for s in family.samples:
            if skip_created and s.name.endswith("_created"):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


@settings(max_examples=200, deadline=None)
@given(UPDATES)
def test_the_text_rendering_parses_to_what_the_registry_collects(updates: list[tuple]) -> None:  # type: ignore[type-arg]
    families, registry = registered(updates)
    expected = samples(registry.collect())
    rendered = samples(parse_text(families.render()))
    assert rendered.keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(rendered[key], value, rel_tol=1e-12), key
    # And prometheus_client's own rendering of the same families parses the same.
    assert samples(parse_text(generate_latest(registry).decode())) == rendered


@settings(max_examples=100, deadline=None)
@given(UPDATES)
def test_the_openmetrics_rendering_parses_with_created_samples(updates: list[tuple]) -> None:  # type: ignore[type-arg]
    families, registry = registered(updates)
    text = families.render(openmetrics=True) + "# EOF\n"
    parsed = list(parse_om(text))
    assert samples(parsed) == samples(registry.collect())
    jobs = {dict(labels)["job"] for _, labels in samples(registry.collect())}
    created = {s.labels["job"] for f in parsed for s in f.samples if s.name.endswith("_created")}
    assert created == jobs


def test_a_job_has_all_its_series_from_its_first_update() -> None:
    families = JobFamilies()
    families.add("j", DLQ_RECORDS, 2)
    got = samples(parse_text(families.render()))
    for name, _ in COUNTERS:
        assert got[(f"{name}_total", (("job", "j"),))] == (2.0 if name == "velo_dlq_records" else 0)
    assert got[("velo_job_batch_duration_seconds_count", (("job", "j"),))] == 0
    families.remove("j")
    assert not any(labels for _, labels in samples(parse_text(families.render())))


def test_counters_refuse_to_go_down() -> None:
    families = JobFamilies()
    try:
        families.add("j", RECORDS_IN, -1)
    except ValueError as exc:
        assert "only go up" in str(exc)
    else:
        raise AssertionError("a negative increment was accepted")


def test_the_provider_exposition_has_each_family_once_in_both_formats() -> None:
    provider = MetricsProvider(CollectorRegistry(), process_metrics=False)
    provider.add_records_in("j", 3)
    provider.set_job_status("j", "running")
    for accept in (None, "application/openmetrics-text; version=1.0.0"):
        body, _ = provider.exposition(accept)
        text = body.decode()
        parse = parse_om if accept else parse_text
        names = [f.name for f in parse(text)]
        assert len(names) == len(set(names)), names
        assert "velo_job_records_in" in names and "velo_error_messages" in names
        assert text.count("# EOF") == (1 if accept else 0)
        assert text.endswith("# EOF\n" if accept else "\n")


def test_a_jobs_counters_are_the_one_place_its_counts_live() -> None:
    """What a processor adds to its JobCounters is what a scrape reads, with no copy."""
    registry = CollectorRegistry()
    provider = MetricsProvider(registry, process_metrics=False)
    counters = provider.job_counters("orders")
    assert provider.job_counters("orders") is counters
    before = counters.snapshot()
    counters.records_in += 7
    counters.records_out += 5
    counters.records_failed += 2
    counters.dead_letters += 2
    counters.observe_batch(0.003)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"job": "orders", **labels})

    assert sample("velo_job_records_in_total") == 7
    assert sample("velo_job_records_out_total") == 5
    assert sample("velo_job_records_failed_total") == 2
    assert sample("velo_dlq_records_total") == 2
    assert sample("velo_job_batch_duration_seconds_count") == 1
    assert b'velo_job_records_in_total{job="orders"} 7.0' in provider.exposition(None)[0]
    # One run's share is read off the same counters.
    counters.records_in += 3
    assert counters.since(before).records_in == 10
    assert counters.since(counters.snapshot()) == JobCounts()
    provider.remove_job("orders")
    assert sample("velo_job_records_in_total") is None
    assert provider.job_counters("orders").records_in == 0
