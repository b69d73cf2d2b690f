"""The fault matrix's pure parts: when a fault counts as healed, and the report. (The matrix itself runs
in the lab: `sudo scripts/bench --faults`.)"""

from ops import faults


def _watch(samples: list[tuple[float, bool]]) -> faults._HealthWatch:
    watch = faults._HealthWatch()
    watch.samples = samples
    return watch


def test_healed_means_healthy_for_good_after_the_fault_and_after_it_was_undone():
    # healthy at first (the fault not yet detected), unhealthy from 2 s, healthy again from 6 s
    samples = [(0.5, True), (1.5, True), (2.5, False), (4.0, False), (6.0, True), (7.0, True)]
    assert _watch(samples).healed_at(not_before=0.0) == 6.0
    # undone only at 6.5 s: the first healthy sample after that
    assert _watch(samples).healed_at(not_before=6.5) == 7.0
    # never seen unhealthy (a crash healed between two samples): the first healthy sample after the fault
    assert _watch([(0.5, True), (1.5, True)]).healed_at(not_before=0.2) == 0.5
    # healthy for a moment, then unhealthy again: healed only when it stays healthy
    flapping = [(1.0, False), (2.0, True), (3.0, False), (4.0, True), (5.0, True)]
    assert _watch(flapping).healed_at(not_before=0.0) == 4.0
    # still unhealthy at the end: not healed
    assert _watch([(0.5, False), (1.5, False)]).healed_at(not_before=0.0) is None


def test_every_fault_the_issue_names_is_in_the_matrix():
    names = " | ".join(f.name for f in faults.FAULTS)
    for fault in (
        "web server (replica) killed",
        "black-holed",
        "nginx crashed",
        "gunicorn crashed",
        "MariaDB crashed",
        "HAProxy crashed",
        "keepalived crashed",
        "replica stopped 5 minutes under writes",
        "primary rebooted",
        "active load balancer killed",
        "active load balancer black-holed",
        "burst over the rate limit",
        "primary killed",
        "primary black-holed",
        "primary's MariaDB frozen 15 s",
    ):
        assert fault in names, fault
    crashes = [f for f in faults.FAULTS if "crashed" in f.name]
    assert crashes and all(f.undo is None for f in crashes), "a crash must heal by itself"


def test_the_primary_a_fault_hits_is_the_writable_server_now_not_the_first_boots(monkeypatch):
    """After a failover row, web-02 is the primary: the next primary fault must hit it, and a replica fault web-01."""
    monkeypatch.setattr(faults, "_hosts", lambda role, db_role=None: ["web-01"] if db_role else ["web-01", "web-02"])
    read_only = {"web-01": "1\n", "web-02": "0\n"}
    monkeypatch.setattr(faults, "_guest", lambda host, *command: read_only[host])
    assert (faults._primary(), faults._replica()) == ("web-02", "web-01")
    read_only["web-02"] = "1\n"  # none writable (mid-failover): the first boot's primary
    assert faults._primary() == "web-01"


def test_the_report_marks_what_did_not_heal_and_keeps_the_notes():
    row = {
        "fault": "nginx crashed (a web server)",
        "host": "web-02",
        "requests": 750,
        "failed_reads": 0,
        "failed_writes": 0,
        "rate_limited": 0,
        "slowest_read_s": 0.31,
        "healed_after_s": 2.4,
        "lost_writes": 0,
        "behind_on_replicas": 0,
        "acknowledged_writes": 150,
        "undone_after_s": None,
        "notes": [],
    }
    stuck = {**row, "fault": "primary rebooted", "healed_after_s": None, "notes": ["not healthy 300 s after: x"]}
    unseen = {**row, "fault": "HAProxy crashed", "healed_after_s": 0.0, "seen_unhealthy": False}
    unseen["health_sampled_every_s"] = 1.8
    lines = faults.markdown([row, stuck, unseen])
    assert "| nginx crashed (a web server) | web-02 | 750 | 0 | 0 | 0.31 s | by itself | 2.4 s | 150 | 0 | 0 |" in lines
    assert any(line.startswith("| primary rebooted |") and "**not healed**" in line for line in lines)
    assert "- primary rebooted: not healthy 300 s after: x" in lines
    assert any(
        line.startswith("| HAProxy crashed |") and "never seen unhealthy (sampled every 1.8 s)" in line
        for line in lines
    )
