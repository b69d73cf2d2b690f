"""lab/health.py's reading of what is wrong (no lab needed: the words its problems() returns)."""

from lab.health import stranded_replicas

STRANDED = 'web-01 unhealthy: {"healthy":false,"replication":{"reason":"replication is not running"},"role":"replica"}'


def test_an_old_primary_stranded_with_its_own_write_is_re_seeded_only_when_nothing_else_is_wrong():
    assert stranded_replicas([STRANDED, "lb-01's HAProxy: {'web-01': 'DOWN'}"]) == ["web-01"]
    assert stranded_replicas([STRANDED, "lb-01's HAProxy: {'web-02': 'DOWN'}"]) == []  # another server down too
    assert stranded_replicas([STRANDED, "web-02 not running"]) == []
    assert stranded_replicas(["the site does not answer from the lab's internet"]) == []
    assert stranded_replicas(['web-02 unhealthy: {"healthy":false,"database":"unreachable"}']) == []
