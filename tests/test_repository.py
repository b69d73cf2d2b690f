"""The repository holds source, not build artefacts: packages come from registries at install time."""

import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[1]
LARGEST_TRACKED_BYTES = 500 * 1024


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)


def test_no_package_is_tracked_and_packages_are_ignored():
    tracked = git("ls-files", "*.deb", "*.rpm", "*.whl", "*.tar.gz").stdout.split()
    assert tracked == [], f"packages committed by mistake: {tracked}"
    assert git("check-ignore", "-q", "--no-index", "haproxy-doc_2.6.12-1+deb12u4_all.deb").returncode == 0, (
        ".gitignore must ignore *.deb"
    )


def test_no_tracked_file_is_large():
    listed = git("ls-files", "-z").stdout.split("\0")
    large = [
        (name, (REPO / name).stat().st_size)
        for name in listed
        if name and (REPO / name).is_file() and (REPO / name).stat().st_size > LARGEST_TRACKED_BYTES
    ]
    assert large == [], f"files over {LARGEST_TRACKED_BYTES // 1024} KB are tracked: {large}"


def pre_commit_hooks() -> dict[str, dict]:
    import yaml

    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    return {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}


def test_pre_commit_runs_the_checks_scripts_test_runs_on_the_same_files():
    import re
    import shlex

    hooks = pre_commit_hooks()
    test_script = (REPO / "scripts/test").read_text()
    for hook in ("ruff", "mypy"):
        tool = shlex.split(hooks[hook]["entry"])[0]
        assert (REPO / tool).exists(), f"{tool} missing: run scripts/setup"
        assert tool in test_script, f"scripts/test does not run {tool}"
    # the formatter: the hook formats what a commit touches, scripts/test fails on any file it would change
    assert hooks["ruff-format"]["entry"].startswith(".venv/bin/ruff format ")
    assert ".venv/bin/ruff format --check .\n" in test_script
    # shellcheck: the files scripts/test checks are exactly those the hook matches
    listed = set(git("ls-files").stdout.split())
    pattern = re.compile(hooks["shellcheck"]["files"])
    checked = {f for f in listed if re.fullmatch(r"scripts/[^/]+|lab/[^/]+\.sh|\.ci/run", f)}
    assert {f for f in listed if pattern.search(f)} == checked and checked
    assert "shellcheck scripts/* lab/*.sh .ci/run" in test_script


def test_the_large_file_hook_refuses_a_large_file_and_passes_a_small_one(tmp_path):
    import shlex

    entry = shlex.split(pre_commit_hooks()["no-large-files"]["entry"])
    small, large = tmp_path / "small.txt", tmp_path / "large.bin"
    small.write_text("ok\n")
    large.write_bytes(b"\0" * (LARGEST_TRACKED_BYTES + 1))
    assert subprocess.run([*entry, str(small)], capture_output=True, timeout=30).returncode == 0
    refused = subprocess.run([*entry, str(small), str(large)], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and refused.stdout.strip() == str(large)
