"""The web console's routes, its static files, and the error-rate history it charts."""

from __future__ import annotations

import fnmatch
import re
import tomllib
import warnings
from collections.abc import Callable
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI

from velostream.api.console import RateHistory, console_router
from velostream.errors import ErrorKind, Stage
from velostream.observability.manager import ObservabilityManager
from velostream.server.processors.error_tracking_helper import ErrorTracker

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

ClientFactory = Callable[..., "TestClient"]

ROOT = Path(__file__).resolve().parents[3]
STATIC = ROOT / "src" / "velostream" / "api" / "static"
ASSETS = ("index.html", "app.js", "app.css")


@pytest.fixture
def client(make_client: ClientFactory, manager: ObservabilityManager) -> TestClient:
    return make_client(manager)


# --- the page and its files ---------------------------------------------------------------


def test_root_serves_the_page_with_a_strict_content_security_policy(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert '<script src="/console/app.js" defer></script>' in response.text
    assert '<link rel="stylesheet" href="/console/app.css">' in response.text


@pytest.mark.parametrize(
    ("name", "media_type"),
    [("app.js", "text/javascript"), ("app.css", "text/css")],
)
def test_assets_are_served_with_their_media_type(
    client: TestClient, name: str, media_type: str
) -> None:
    response = client.get(f"/console/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert response.content == (STATIC / name).read_bytes()


@pytest.mark.parametrize(
    "path", ["/console/index.htm", "/console/..%2Fconsole.py", "/console/.%2E/app.py"]
)
def test_only_the_named_assets_are_served(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_the_page_is_not_in_the_openapi_schema_but_the_rates_are(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/console/{name}" not in paths
    assert "/console/rates" in paths


def test_the_static_files_ship_as_package_data() -> None:
    packaged = resources.files("velostream.api").joinpath("static")
    for name in ASSETS:
        assert packaged.joinpath(name).is_file(), name
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["velostream"]
    for path in STATIC.rglob("*"):
        relative = path.relative_to(ROOT / "src" / "velostream").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


@pytest.mark.parametrize("name", ASSETS)
def test_nothing_is_loaded_from_another_origin(name: str) -> None:
    text = (STATIC / name).read_text(encoding="utf-8")
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"')]*", text))
    assert urls <= {"http://www.w3.org/2000/svg"}


def test_server_values_are_set_as_text_never_parsed_as_html() -> None:
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


class _Controls(HTMLParser):
    """Form controls of the page and the `for` of its labels."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in {"input", "select", "textarea"}:
            self.controls.append(attributes)
        if tag == "label" and attributes.get("for"):
            self.label_for.add(str(attributes["for"]))


def test_every_control_of_the_page_has_a_label() -> None:
    parser = _Controls()
    parser.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    assert len(parser.controls) >= 4
    for control in parser.controls:
        assert control.get("id") in parser.label_for or control.get("aria-label"), control


# --- contrast, computed from the CSS ------------------------------------------------------

# (text, background) custom properties that are drawn together.
PAIRS = [
    ("fg", "bg"),
    ("fg", "card"),
    ("muted", "card"),
    ("muted", "bg"),
    ("fg", "row-hover"),
    ("fg", "row-selected"),
    ("muted", "row-selected"),
    ("accent", "card"),
    ("header-fg", "header-bg"),
    ("header-muted", "header-bg"),
    ("button-fg", "button-bg"),
    ("button-disabled-fg", "button-disabled-bg"),
    ("ok-fg", "ok-bg"),
    ("bad-fg", "bad-bg"),
    ("warn-fg", "warn-bg"),
    ("idle-fg", "idle-bg"),
    ("user-fg", "user-bg"),
    ("fg", "code-bg"),
]


def _palettes() -> dict[str, dict[str, str]]:
    css = (STATIC / "app.css").read_text(encoding="utf-8")
    light = re.search(r"^:root\s*\{(.*?)^\}", css, re.S | re.M)
    dark = re.search(r"prefers-color-scheme:\s*dark\)\s*\{\s*:root\s*\{(.*?)\}", css, re.S)
    assert light is not None and dark is not None

    def variables(block: str) -> dict[str, str]:
        return dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})\s*;", block))

    return {"light": variables(light.group(1)), "dark": variables(dark.group(1))}


def _luminance(hex_colour: str) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else float(((c + 0.055) / 1.055) ** 2.4)

    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_contrast_formula() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(("text", "background"), PAIRS)
def test_text_colours_have_at_least_4_5_to_1(scheme: str, text: str, background: str) -> None:
    palette = _palettes()[scheme]
    ratio = contrast(palette[text], palette[background])
    assert ratio >= 4.5, f"{scheme}: --{text} on --{background} is {ratio:.2f}:1"


def test_chart_lines_have_at_least_3_to_1_on_both_schemes() -> None:
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    palette = re.search(r"const PALETTE = \[(.*?)\];", script)
    assert palette is not None
    colours = re.findall(r"#[0-9a-fA-F]{6}", palette.group(1))
    assert len(colours) >= 6
    cards = [p["card"] for p in _palettes().values()]
    for colour in colours:
        for card in cards:
            assert contrast(colour, card) >= 3.0, (colour, card)


def test_both_schemes_define_the_same_colours() -> None:
    palettes = _palettes()
    assert palettes["light"].keys() == palettes["dark"].keys()


# --- the rate history ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Totals:
    def __init__(self) -> None:
        self.errors: dict[str, int] = {}
        self.records: dict[str, int] = {}

    def __call__(self) -> tuple[dict[str, int], dict[str, int]]:
        return dict(self.errors), dict(self.records)


def _history(keep: float = 900.0) -> tuple[RateHistory, Clock, Totals]:
    clock, totals = Clock(), Totals()
    return RateHistory(totals, keep_seconds=keep, clock=clock), clock, totals


def test_rates_are_errors_per_second_per_bucket() -> None:
    history, clock, totals = _history()
    totals.errors = {"a": 0}
    history.sample()
    for second in range(1, 21):
        clock.now += 1
        totals.errors = {"a": 2 * second, "b": 10 if second >= 15 else 0}
        history.sample()
    doc = history.error_rates(window=20, step=5)
    assert doc["points"] == 4 and doc["step"] == 5 and doc["end"] == clock.now
    assert doc["jobs"]["a"] == [2.0, 2.0, 2.0, 2.0]
    assert doc["jobs"]["b"] == [0.0, 0.0, 2.0, 0.0]


def test_buckets_before_the_first_sample_have_no_data() -> None:
    history, clock, totals = _history()
    totals.errors = {"a": 5}
    history.sample()
    clock.now += 3
    totals.errors = {"a": 20}
    history.sample()
    rates = history.error_rates(window=20, step=5)["jobs"]["a"]
    # The last bucket began before sampling did: it counts from the first sample.
    assert rates == [None, None, None, 3.0]


def test_a_total_that_goes_down_counts_as_no_errors() -> None:
    history, clock, totals = _history()
    totals.errors = {"a": 50}
    history.sample()
    clock.now += 5
    totals.errors = {"a": 3}  # the job was removed and deployed again
    history.sample()
    assert history.error_rates(window=5, step=5)["jobs"]["a"] == [0.0]


def test_record_rates_over_the_last_seconds() -> None:
    history, clock, totals = _history()
    assert history.record_rates() == {}
    for second in range(30):
        totals.records = {"a": 100 * second}
        history.sample()
        clock.now += 1
    assert history.record_rates(10) == {"a": pytest.approx(100.0)}


def test_min_interval_skips_a_sample_and_old_samples_are_dropped() -> None:
    history, clock, _ = _history(keep=60)
    history.sample()
    history.sample(min_interval=1.0)
    assert len(history) == 1
    for _ in range(500):
        clock.now += 1
        history.sample(min_interval=1.0)
    assert len(history) <= 62


def test_a_clock_step_backwards_is_ignored() -> None:
    history, clock, _ = _history()
    history.sample()
    clock.now -= 10
    history.sample()
    assert len(history) == 1


def test_rates_endpoint(client: TestClient, manager: ObservabilityManager) -> None:
    ErrorTracker.record_error(manager, "orders", "boom", stage=Stage.PROCESS, kind=ErrorKind.TYPE)
    doc = client.get("/console/rates", params={"window": 60, "step": 10}).json()
    assert doc["points"] == 6 and doc["step"] == 10
    assert set(doc["jobs"]) == {"orders"} and len(doc["jobs"]["orders"]) == 6
    assert doc["records_in_per_second"] == {}
    assert client.get("/console/rates", params={"window": 0}).status_code == 422
    assert client.get("/console/rates", params={"step": 0.5}).status_code == 422


def test_the_sampler_runs_while_the_app_runs(manager: ObservabilityManager) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    history, _, totals = _history()
    totals.errors = {"a": 1}
    app = FastAPI()
    app.include_router(console_router(manager, history=history))
    assert len(history) == 0
    with TestClient(app):
        assert len(history) >= 1  # sampled at startup, then once a second
