"""Fixtures of the operations scripts' tests."""

from collections.abc import Iterator

import pytest
from moto import mock_aws

from tests.helpers import MOTO_REGION


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
