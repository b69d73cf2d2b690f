import pytest

from lab.mock_cloud import ProgramRun, run_program
from tests.helpers import WEB_COUNTS

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
