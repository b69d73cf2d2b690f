from collections.abc import Iterator

import pytest
from moto import mock_aws

from lab.mock_cloud import ProgramRun, run_program
from tests.helpers import MOTO_REGION, WEB_COUNTS

# scripts/test --repeat N: the pass count of each test at the end
pytest_plugins = ["tests.repeat_report"]


@pytest.fixture(scope="session")
def programs() -> dict[int, ProgramRun]:
    """The whole program run under mocks once per web count (runs are slow-ish; share them)."""
    return {count: run_program({"webCount": count, "azCount": 3 if count > 2 else 2}) for count in WEB_COUNTS}


@pytest.fixture(scope="session")
def pair() -> ProgramRun:
    """The program with a load-balancer pair (lbCount 2), otherwise the defaults."""
    return run_program({"lbCount": 2})


@pytest.fixture(params=WEB_COUNTS, ids=lambda c: f"webCount={c}")
def program(request, programs) -> ProgramRun:
    return programs[request.param]


@pytest.fixture
def mocked_aws(monkeypatch) -> Iterator[None]:
    """moto's AWS in this process, with fake credentials set before any client is made (moto's docs)."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": MOTO_REGION,
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield
