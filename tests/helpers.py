"""Helpers the tests share (conftest.py files keep only fixtures)."""

import shutil

import pytest

# Counts the program is checked at: the default, a larger odd count across three AZs, the maximum.
WEB_COUNTS = (2, 5, 20)


def require_tool(name: str) -> str:
    """Validators are real tools from Debian's packages; .ci/run installs them. Missing is a failure."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/test (it installs the validators), or apt-get install it")
    return path


# The region of the tests that run against moto in this process (tests/conftest.py mocked_aws).
MOTO_REGION = "eu-west-1"
