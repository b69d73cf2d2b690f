"""The type checker sees every key of a nested provider input.

Pulumi's mocks accept any dictionary: `metadata_options={"http_token": "required"}` (one letter short)
passes every mock test and would only fail, or silently do nothing, on AWS. The components build
nested inputs through pulumi-aws's typed dicts (`aws.ec2.InstanceMetadataOptionsArgsDict`, ...), so
mypy, run by scripts/test with the project's configuration, names such a key. Here a copy of
components/ec2.py with the key misspelled is checked the same way, beside the unmodified copy.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
CORRECT = 'http_tokens="required"'
MISSPELLED = 'http_token="required"'


def mypy(path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    # From the repository, with its pyproject.toml: imports (components, settings, pulumi_aws) resolve
    # as in scripts/test.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_misspelled_key_in_a_nested_input_fails_the_type_check_by_name(tmp_path):
    source = (REPO / "components" / "ec2.py").read_text()
    assert source.count(CORRECT) == 1, "components/ec2.py should set http_tokens once, through the typed dict"

    unchanged = tmp_path / "ec2_unchanged.py"
    unchanged.write_text(source)
    result = mypy(unchanged)
    assert result.returncode == 0, result.stdout + result.stderr

    planted = tmp_path / "ec2_planted.py"
    planted.write_text(source.replace(CORRECT, MISSPELLED))
    result = mypy(planted)
    assert result.returncode == 1, result.stdout + result.stderr
    assert '"http_token"' in result.stdout and "InstanceMetadataOptionsArgsDict" in result.stdout, result.stdout
