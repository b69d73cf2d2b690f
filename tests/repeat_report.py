"""A pytest plugin for `scripts/test --repeat N`: how many of the N runs of each chosen test passed."""

import re


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """With `scripts/test --repeat N` (pytest-repeat's --count): how many of the N runs of each test passed."""
    count = config.getoption("count", 1) or 1
    if count < 2:
        return
    passed: dict[str, bool] = {}  # a run passed when none of its phases failed or erred
    for outcome in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            passed[report.nodeid] = passed.get(report.nodeid, True) and outcome == "passed"
    runs: dict[str, list[bool]] = {}
    for nodeid, ok in passed.items():
        # pytest-repeat names run k of N `test[k-N]` (or `test[param-k-N]`)
        runs.setdefault(re.sub(rf"-?\b\d+-{count}\]$", "]", nodeid).removesuffix("[]"), []).append(ok)
    terminalreporter.section(f"repeat: each test {count} times in a row")
    for test, outcomes in sorted(runs.items()):
        terminalreporter.write_line(f"{sum(outcomes)} of {len(outcomes)} passed  {test}")
