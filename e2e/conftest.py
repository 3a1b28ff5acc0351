"""Fixtures for the end-to-end suite: a real Envoy 1.40 running the built .wasm."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


@pytest.fixture(scope="module")
def stack():
    """Upstream + Envoy with e2e/envoy.yaml as shipped (its plugin config included)."""
    s = harness.Stack()
    yield s
    s.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, show the end of Envoy's log: it holds the records and any plugin error."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "stack" in item.funcargs:
        log = item.funcargs["stack"].envoy.log()
        report.sections.append(("envoy log (tail)", log[-8000:]))
