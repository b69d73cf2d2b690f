"""The failover controller against three real MariaDB servers (Debian's mariadbd, the stack's own
60-webinfra.cnf, users and self-fence event): a primary and two semi-synchronous replicas on
loopback. Kills are real (SIGKILL); what only a network can do (a primary cut off, not dead) is
the lab's (tests/lab)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import pathlib
import re
import signal
import subprocess
import threading
import time

import pymysql
import pytest

from failover.webinfra_failover import Controller, Settings, gtid_reached
from provisioning import render
from provisioning.defaults import SERVER_DEFAULTS, seconds
from tests.app.helpers import (
    MariaDB,
    PausableRelay,
    Stack,
    declared_environment,
    declared_web_files,
    make_tls,
    password,
    start_mariadb,
    users_script,
    wait_for,
)

HEARTBEAT = 0.5


@dataclasses.dataclass
class Cluster:
    servers: dict[str, MariaDB]
    stack: Stack
    base: pathlib.Path
    metrics: list[tuple[str, float, str | None]]
    said: list[str]
    controllers: list[Controller] = dataclasses.field(default_factory=list)

    def settings(self, **overrides) -> Settings:
        values = dict(
            servers=tuple((name, "127.0.0.1", server.port) for name, server in self.servers.items()),
            user=render.DB_FAILOVER_USER,
            password=self.stack.failover_password,
            tls_ca=str(self.stack.tls / "ca.pem"),
            interval=0.2,
            failure_after=2.0,
            silence_after=1.5,
            heartbeat_period=HEARTBEAT,
            drain_timeout=5.0,
        )
        return Settings(**{**values, **overrides})

    def controller(self, **overrides) -> Controller:
        controller = Controller(
            self.settings(**overrides),
            say=self.said.append,
            metric=lambda name, value, host: self.metrics.append((name, value, host)),
        )
        self.controllers.append(controller)
        return controller

    def restart(self, name: str) -> MariaDB:
        """Start a stopped server again on its data directory and port (it boots read-only, as on a host)."""
        old = self.servers[name]
        import subprocess

        process = subprocess.Popen(["mariadbd", f"--defaults-file={old.directory / 'my.cnf'}", "--user=root"])
        server = MariaDB(name, old.directory, old.port, process)
        wait_for(f"MariaDB {name}", lambda: server.sql("SELECT 1"), seconds=60)
        self.servers[name] = server
        return server


def follow(server: MariaDB, primary: MariaDB, stack: Stack, start: bool = True, mode: str = "slave_pos") -> None:
    """webinfra-db-follow's statement, with this machine's ports (the lab runs the script itself)."""
    if start:
        server.sql("CALL mysql.webinfra_end_dump_threads()")
    server.sql("STOP SLAVE")
    server.sql(
        f"CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {primary.port}, "
        f"MASTER_USER = '{render.DB_REPLICATION_USER}', MASTER_PASSWORD = '{stack.replication_password}', "
        f"MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = {HEARTBEAT}, MASTER_SSL = 1, "
        f"MASTER_SSL_CA = '{stack.tls / 'ca.pem'}', MASTER_SSL_VERIFY_SERVER_CERT = 1, MASTER_USE_GTID = {mode}"
    )
    if start:
        server.sql("START SLAVE")


@pytest.fixture
def cluster(tmp_path):
    tls = make_tls(tmp_path)
    names = ("web-01", "web-02", "web-03")
    servers: dict[str, MariaDB] = {}
    try:
        # Three at once (each waits for its server to answer): the suite starts one cluster per test.
        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            started = {
                name: pool.submit(start_mariadb, tmp_path, name, "primary" if name == "web-01" else "replica", tls)
                for name in names
            }
            for name, future in started.items():
                with contextlib.suppress(Exception):  # a failed start is raised below, once every one is known
                    servers[name] = future.result()
            for future in started.values():
                future.result()
        primary = servers["web-01"]
        stack = Stack(primary, servers["web-02"], password(), password(), tls, password())
        fence = render.render_template(
            "webinfra-db-self-fence.sql.j2",
            failover_user=render.DB_FAILOVER_USER,
            replication_user=render.DB_REPLICATION_USER,
        )
        for server in servers.values():
            server.sql("RESET MASTER")
            server.client(fence)
        # webinfra-db-setup on the first primary: schema, users, its stored settings (pointing at
        # itself), then writable; on each replica: follow the primary.
        primary.client((render.APP_DIR / "schema.sql").read_text())
        primary.client(users_script(stack))
        follow(primary, primary, stack, start=False, mode="current_pos")
        primary.sql("SET GLOBAL read_only = OFF")
        for name in names[1:]:
            servers[name].sql("SET GLOBAL gtid_slave_pos = ''")
            follow(servers[name], primary, stack)
        for name in names[1:]:
            wait_for("replication", lambda n=name: servers[n].sql("SHOW TABLES FROM webinfra LIKE 'messages'"), 30)
        cluster = Cluster(servers, stack, tmp_path, [], [])
        yield cluster
        for controller in cluster.controllers:  # their watchers (threads) stop with the test
            controller.stop()
    finally:
        with concurrent.futures.ThreadPoolExecutor(max(1, len(servers))) as pool:
            list(pool.map(MariaDB.stop, servers.values()))


def semi_sync(server: MariaDB) -> tuple[str, int]:
    status = {r["Variable_name"]: r["Value"] for r in server.sql("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'")}
    return status["Rpl_semi_sync_master_status"], int(status["Rpl_semi_sync_master_clients"])


def write(server: MariaDB, text: str) -> None:
    server.sql("INSERT INTO webinfra.messages (text, host) VALUES (%s, 'test')", (text,))


def texts(server: MariaDB) -> set[str]:
    return {r["text"] for r in server.sql("SELECT text FROM webinfra.messages")}


def read_only(server: MariaDB) -> bool:
    return bool(server.sql("SELECT @@global.read_only AS r")[0]["r"])


def kill(server: MariaDB) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=30)


def run_until(controller: Controller, verdict: str, seconds: float = 30.0) -> list[str]:
    """Poll as the service does, until a verdict starts with `verdict`; every verdict seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = controller.step()
        if not seen or seen[-1] != result:
            seen.append(result)
        if result.startswith(verdict):
            return seen
        time.sleep(controller.settings.interval)
    raise AssertionError(f"no {verdict!r} within {seconds} s; verdicts: {seen}")


def arm(controller: Controller, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not controller.armed:
        assert time.monotonic() < deadline, controller.arming
        controller.step()
        time.sleep(controller.settings.interval)


class Running:
    """The controller polling in the background, as the service runs it."""

    def __init__(self, controller: Controller):
        self.controller, self.stop = controller, threading.Event()
        self.verdicts: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.verdicts.append(self.controller.step())
            time.sleep(self.controller.settings.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)


def test_the_controller_turns_semi_sync_on_and_arms_once_a_replica_has_caught_up(cluster):
    primary = cluster.servers["web-01"]
    assert semi_sync(primary)[0] == "OFF"  # every server boots with it off: the controller owns it
    controller = cluster.controller()
    run_until(controller, "primary web-01")
    assert not controller.armed
    arm(controller)
    assert semi_sync(primary) == ("ON", 2)
    assert any("semi-synchronous replication on for web-01" in m for m in cluster.said), cluster.said


def test_a_dead_primary_is_replaced_by_a_replica_with_every_acknowledged_write(cluster):
    servers = cluster.servers
    controller = cluster.controller()
    assert run_until(controller, "primary web-01")[-1] == "primary web-01"
    arm(controller)
    acknowledged = []
    for n in range(50):
        write(servers["web-01"], f"row {n}")
        acknowledged.append(f"row {n}")
    # From before the primary's last answer: the controller counts failure_after from that answer, and the
    # kill itself takes a moment (counted from after it, a failover 2.0 s after the answer measured 1.84 s).
    started = time.monotonic()
    controller.step()
    kill(servers["web-01"])
    verdicts = run_until(controller, "failed over to")
    took = time.monotonic() - started
    new_name = verdicts[-1].split()[-1]
    new, other = servers[new_name], servers[({"web-02", "web-03"} - {new_name}).pop()]
    assert not read_only(new) and read_only(other)
    assert set(acknowledged) <= texts(new)
    write(new, "after the failover")
    wait_for("the other replica follows", lambda: "after the failover" in texts(other), 15)
    status = other.sql("SHOW SLAVE STATUS")[0]
    assert (status["Master_Port"], status["Slave_IO_Running"]) == (new.port, "Yes")
    # The other replica kept its stored credentials and TLS: only the address changed.
    assert (status["Master_User"], status["Master_SSL_Verify_Server_Cert"]) == (render.DB_REPLICATION_USER, "Yes")
    assert ("BecamePrimary", 1, new_name) in cluster.metrics, cluster.metrics
    # It waited for failure_after (by its own clock, from the primary's last answer: a test's clock around
    # the kill is off by a poll on a busy machine, as CI saw: 1.88 s) and the replicas' silence.
    (decided,) = [m for m in cluster.said if "every replica agrees; failing over" in m]
    unanswered = re.search(r"unanswered for ([0-9.]+) s", decided)
    assert unanswered and float(unanswered.group(1)) >= 2.0, decided
    assert took < 10, (took, verdicts)
    assert any(v.startswith("primary web-01 unanswered for") for v in verdicts), verdicts


def binlog_reader(server: MariaDB, stack: Stack) -> subprocess.Popen:
    """A client streaming `server`'s binary log as the replication user: a dump thread on it, as a replica's."""
    first = server.sql("SHOW BINARY LOGS")[0]["Log_name"]
    return subprocess.Popen(
        [
            *("mariadb-binlog", "--read-from-remote-server", "--stop-never", "--host=127.0.0.1"),
            *(f"--port={server.port}", f"--user={render.DB_REPLICATION_USER}"),
            *(f"--password={stack.replication_password}", f"--ssl-ca={stack.tls / 'ca.pem'}", first),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def dump_threads(server: MariaDB) -> int:
    return server.sql("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'")[0]["n"]


def test_a_failover_ends_the_binlog_dump_threads_left_on_the_servers_it_makes_replicas_or_primary(cluster):
    """A dump thread left on a server from an earlier time as primary (its replica cut off, since gone
    elsewhere) hung MariaDB in the lab once semi-sync was switched around it. The failover ends every
    such thread on the replicas it stops and repoints and on the one it promotes, before any semi-sync change."""
    servers = cluster.servers
    controller = cluster.controller()
    run_until(controller, "primary web-01")
    arm(controller)
    readers = {name: binlog_reader(servers[name], cluster.stack) for name in ("web-02", "web-03")}
    try:
        wait_for("the readers' dump threads", lambda: all(dump_threads(servers[name]) for name in readers), 15)
        kill(servers["web-01"])
        run_until(controller, "failed over to")
        for name, reader in readers.items():
            assert reader.wait(timeout=15) != 0, f"the binlog reader on {name} was not cut"
    finally:
        for reader in readers.values():
            if reader.poll() is None:
                reader.kill()


def test_the_old_primary_returns_read_only_and_rejoins_the_new_one(cluster):
    servers = cluster.servers
    controller = cluster.controller()
    run_until(controller, "primary web-01")
    arm(controller)
    write(servers["web-01"], "before")
    controller.step()
    kill(servers["web-01"])
    new_name = run_until(controller, "failed over to")[-1].split()[-1]
    write(servers[new_name], "while web-01 was away")
    old = cluster.restart("web-01")
    assert read_only(old)  # every server boots read-only: no split brain at its return
    wait_for("web-01 rejoins", lambda: controller.step() and "while web-01 was away" in texts(old), 20)
    status = old.sql("SHOW SLAVE STATUS")[0]
    assert status["Master_Port"] == servers[new_name].port and status["Slave_IO_Running"] == "Yes"
    assert read_only(old)
    assert any(m.startswith("web-01 now replicates from") for m in cluster.said), cluster.said


def test_with_no_replica_acknowledging_it_disarms_first_then_goes_asynchronous_and_never_fails_over(cluster):
    """Patroni's rule. The write that waited is acknowledged only once failover is disarmed, so the
    primary's death right after it cannot cost it: no failover happens."""
    servers = cluster.servers
    controller = cluster.controller()
    run_until(controller, "primary web-01")
    arm(controller)
    for name in ("web-02", "web-03"):  # the replicas stop receiving: web-01's next writes are its own
        servers[name].sql("STOP SLAVE IO_THREAD")
    with Running(controller) as running:
        started = time.monotonic()
        write(servers["web-01"], "only on web-01")  # waits for an acknowledgement, then for the controller
        waited = time.monotonic() - started
        assert not controller.armed, controller.arming
        kill(servers["web-01"])
        for name in ("web-02", "web-03"):
            servers[name].sql("START SLAVE IO_THREAD")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("no automatic failover" in v for v in running.verdicts):
            time.sleep(0.2)
    assert 3.0 <= waited < 6, waited  # fallback_after, and a poll or two
    assert any("no automatic failover" in v for v in running.verdicts), running.verdicts
    assert not any("failed over" in v for v in running.verdicts), running.verdicts
    # Published: armed, then disarmed at the fallback; then the refusal, for a person to look at.
    armed = [value for name, value, _ in cluster.metrics if name == "FailoverArmed"]
    assert armed[:2] == [1, 0] or armed[-1] == 0, cluster.metrics
    assert ("DatabaseAttention", 1, None) in cluster.metrics, cluster.metrics
    assert read_only(servers["web-02"]) and read_only(servers["web-03"])


def test_a_restarted_primary_with_everything_is_made_writable_again_without_a_failover(cluster):
    servers = cluster.servers
    controller = cluster.controller(failure_after=30.0)
    run_until(controller, "primary web-01")
    write(servers["web-01"], "before the restart")
    servers["web-01"].stop()
    old = cluster.restart("web-01")
    assert read_only(old)
    run_until(controller, "restored web-01")
    assert not read_only(old)
    write(old, "after the restart")
    for name in ("web-02", "web-03"):
        wait_for("replication resumes", lambda n=name: "after the restart" in texts(servers[n]), 20)


def test_no_failover_while_the_replicas_still_hear_the_primary(cluster):
    """The controller loses the primary (its own network path), the replicas do not: no failover. The
    primary fences itself meanwhile (no controller renews its lease): writes wait for the path."""
    servers = cluster.servers
    relay = PausableRelay(servers["web-01"].port)  # web-01's address, as everyone sees it
    try:
        for name in ("web-02", "web-03"):
            servers[name].sql("STOP SLAVE")
            servers[name].sql(f"CHANGE MASTER TO MASTER_PORT = {relay.port}")
            servers[name].sql("START SLAVE")
        wait_for("both replicas connected", lambda: relay.connections >= 2, 10)
        via_relay = tuple((n, a, relay.port if n == "web-01" else p) for n, a, p in cluster.settings().servers)
        controller = cluster.controller(servers=via_relay)
        run_until(controller, "primary web-01")
        arm(controller)
        relay.pause(spare=2, hold_new=True)  # the controller's path only: its connections, now and new
        stop = threading.Event()

        def writes():  # a busy primary: events keep reaching the replicas
            n = 0
            while not stop.is_set():
                write(servers["web-01"], f"busy {n}")
                n += 1
                time.sleep(0.05)

        writer = threading.Thread(target=writes, daemon=True)
        writer.start()
        try:
            verdicts: list[str] = []
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                verdicts.append(controller.step())
                time.sleep(0.2)
        finally:
            stop.set()
            writer.join()
        assert not any("failed over" in v for v in verdicts), verdicts
        assert any("still receive from it" in v for v in verdicts), verdicts
        # Cut off from every controller, web-01 fenced itself (its lease ran out): writes stop, and
        # nobody else was made writable. The replicas still follow it.
        assert read_only(servers["web-01"]) and read_only(servers["web-02"]) and read_only(servers["web-03"])
        for name in ("web-02", "web-03"):
            assert servers[name].sql("SHOW SLAVE STATUS")[0]["Master_Port"] == relay.port
        relay.resume()  # the path is back: the controller makes it writable again, with everything
        run_until(controller, "restored web-01")
        assert not read_only(servers["web-01"])
    finally:
        relay.close()


def test_a_second_writable_server_is_fenced_at_once(cluster):
    servers = cluster.servers
    controller = cluster.controller()
    run_until(controller, "primary web-01")
    servers["web-03"].sql("SET GLOBAL read_only = OFF")  # by mistake, or an old primary back unfenced
    wait_for("web-03 fenced", lambda: controller.step() and read_only(servers["web-03"]), 5)  # within polls
    assert not read_only(servers["web-01"])
    assert any("fenced web-03" in m for m in cluster.said), cluster.said


def failover_sessions(server: MariaDB) -> int:
    return server.sql(
        "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE USER = %s", (render.DB_FAILOVER_USER,)
    )[0]["n"]


def test_the_standby_holds_no_lease_and_arms_only_once_it_has_seen_the_primary_itself(cluster, tmp_path):
    """Only the active controller talks to the databases (its sessions are the primary's lease). One that
    takes over starts from nothing: it fails over only after it has itself seen the primary armed."""
    import json

    state = tmp_path / "lb-state"
    state.write_text("BACKUP\n")
    servers = cluster.servers
    standby = cluster.controller(active_file=str(state), state_file=str(tmp_path / "failover.json"))
    active = cluster.controller()
    run_until(active, "primary web-01")
    arm(active)
    active_sessions = failover_sessions(servers["web-01"])
    assert standby.step() == "standby: the active load balancer decides"
    assert failover_sessions(servers["web-01"]) == active_sessions  # the standby opened none
    assert json.loads((tmp_path / "failover.json").read_text())["active"] is False
    active.stop()  # the active one goes away (its load balancer died)
    state.write_text("MASTER\n")  # keepalived made the standby the active one
    run_until(standby, "primary web-01")
    arm(standby)  # it sees the primary armed itself...
    kill(servers["web-01"])
    run_until(standby, "failed over to")  # ...so it may fail over
    written = json.loads((tmp_path / "failover.json").read_text())
    assert written["active"] is True and written["primary"] in ("web-02", "web-03")


def test_a_controller_that_never_saw_the_primary_armed_does_not_fail_over(cluster, tmp_path):
    servers = cluster.servers
    active = cluster.controller()
    run_until(active, "primary web-01")
    arm(active)
    kill(servers["web-01"])
    fresh = cluster.controller()  # a controller started after the primary died (its LB took over late)
    verdicts = run_until(fresh, "the primary web-01 is down; no automatic failover")
    assert not any("failed over" in v for v in verdicts)


def test_no_failover_while_a_replica_does_not_answer(cluster):
    """webCount 3: the replica that does not answer may hold the only acknowledged copy of a write."""
    servers = cluster.servers
    controller = cluster.controller()
    run_until(controller, "primary web-01")
    arm(controller)
    servers["web-03"].stop()
    kill(servers["web-01"])
    verdicts = run_until(controller, "the primary web-01 is down, but web-03 do not answer either")
    assert not any("failed over" in v for v in verdicts)
    assert read_only(servers["web-02"])
    assert ("DatabaseAttention", 1, None) in cluster.metrics


def test_a_primary_cut_off_from_every_controller_fences_itself(cluster):
    """The event: a controller's session that stops speaking is a lease that ran out."""
    primary = cluster.servers["web-01"]
    lease_seconds = seconds(SERVER_DEFAULTS.failover.self_fence_after)
    session = pymysql.connect(
        host="127.0.0.1",
        port=primary.port,
        user=render.DB_FAILOVER_USER,
        password=cluster.stack.failover_password,
        ssl_ca=str(cluster.stack.tls / "ca.pem"),
        ssl_verify_cert=True,
    )
    try:
        started = time.monotonic()
        deadline = started + lease_seconds - 1
        while time.monotonic() < deadline:  # a controller speaking every 0.5 s: the lease holds
            session.query("SELECT 1")
            assert not read_only(primary)
            time.sleep(0.5)
        silent = time.monotonic()  # ...then silent, its connection still open (a host gone)
        wait_for("the self-fence", lambda: read_only(primary), seconds=lease_seconds + 3)
        took = time.monotonic() - silent
        assert lease_seconds - 0.5 <= took <= lease_seconds + 2, took
    finally:
        session.close()


def test_a_primary_no_controller_has_spoken_to_stays_writable(cluster):
    """A first boot before the load balancers exist, or controllers that closed their connections. The
    event's own bookkeeping (when it last ran) adds no GTID: nothing for a replica to differ on."""
    primary = cluster.servers["web-01"]
    before = primary.sql("SELECT @@global.gtid_binlog_state AS s")[0]["s"]
    time.sleep(seconds(SERVER_DEFAULTS.failover.self_fence_after) + 1.5)
    assert not read_only(primary)
    assert primary.sql("SELECT @@global.gtid_binlog_state AS s")[0]["s"] == before


def test_a_primary_frozen_past_the_lease_is_read_only_as_soon_as_it_resumes(cluster):
    """The lab froze a primary's mariadbd 15 s (SIGSTOP): back, it was writable until the controller's
    next poll, and its controllers' sessions were already gone, so the lease rule could not fire. The
    event sees the gap since its own last run and fences it at its first run after the thaw."""
    primary = cluster.servers["web-01"]
    lease = seconds(SERVER_DEFAULTS.failover.self_fence_after)
    time.sleep(1.5)  # the event has run: it knows when
    primary.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(lease + 1.5)
    finally:
        primary.process.send_signal(signal.SIGCONT)
    samples = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        samples.append(read_only(primary))
        time.sleep(0.05)
    assert samples[-1], samples
    print(f"read_only after the thaw, every 50 ms: {samples}")


def test_gtid_reached_compares_each_domain():
    assert gtid_reached("0-1-10,1-2-3", "0-1-10")
    assert not gtid_reached("0-1-9", "0-2-10")
    assert gtid_reached("0-1-9", "")


def test_a_replica_cut_off_mid_transaction_counts_as_drained():
    """The black-holed primary's stream ends inside a transaction: the relay log holds its beginning,
    the SQL thread waits at the end for the rest. That transaction was never acknowledged: drained."""
    from failover.webinfra_failover import Observation, applied_all

    cut = Observation("web-02", "10.0.0.12", 3306, 0.0, reachable=True, current_pos="0-1-241", io_pos="0-1-242")
    assert not applied_all(cut)  # still applying, as far as anyone can tell
    cut.sql_running, cut.sql_state = "Yes", "Slave has read all relay log; waiting for more updates"
    assert applied_all(cut)
    cut.sql_running = "No"  # stopped: it would not be waiting for anything
    assert not applied_all(cut)


def test_a_replica_with_semi_syncs_primary_side_on_gets_it_switched_off(cluster):
    """A former primary made a replica by hand (scripts/promote) kept it on: each transaction it applied
    waited for an acknowledgement nobody sends, and it fell 190 transactions behind (lab, issue 13)."""
    servers = cluster.servers
    controller = cluster.controller()
    run_until(controller, "primary web-01")
    servers["web-02"].sql("SET GLOBAL rpl_semi_sync_master_enabled = ON")
    wait_for(
        "semi-sync's primary side off on web-02",
        lambda: controller.step() and servers["web-02"].sql("SELECT @@rpl_semi_sync_master_enabled AS e")[0]["e"] == 0,
        5,
    )
    write(servers["web-01"], "applied at once")
    wait_for("web-02 applies it at once", lambda: "applied at once" in texts(servers["web-02"]), 5)


def test_a_write_only_one_server_has_is_told_by_server_not_by_sequence():
    from failover.webinfra_failover import writes_not_in

    # The returning primary (server 2) wrote 0-2-85 alone; the new primary (server 1) went on to 0-1-85.
    assert writes_not_in("0-1-40,0-2-85", "0-1-85,0-2-84") == ["0-2-85"]
    assert writes_not_in("0-1-40,0-2-84", "0-1-85,0-2-84") == []
    assert writes_not_in("0-2-84", "0-1-85") == ["0-2-84"]  # nothing at all from server 2 there
    assert writes_not_in("", "0-1-85") == []


def test_semi_sync_comes_back_on_under_steady_writes(cluster):
    """The replica is a few transactions behind the very poll's position all the time: it counts as
    caught up once it has the previous poll's."""
    servers = cluster.servers
    controller = cluster.controller()
    run_until(controller, "primary web-01")
    stop = threading.Event()

    def writes():
        n = 0
        while not stop.is_set():
            write(servers["web-01"], f"steady {n}")
            n += 1

    writer = threading.Thread(target=writes, daemon=True)
    writer.start()
    try:
        arm(controller)
    finally:
        stop.set()
        writer.join()
    assert semi_sync(servers["web-01"])[0] == "ON"


# --- a pair of load balancers: the Elastic IP's holder decides -------------------------------------------------


@dataclasses.dataclass
class ElasticIp:
    """The stack's Elastic IP and its two load balancers, in moto's EC2 (this process)."""

    ec2: object
    allocation: str
    lbs: dict[str, str]  # lb name → instance id
    filters: list[dict]

    def move_to(self, lb: str) -> None:
        self.ec2.associate_address(  # type: ignore[attr-defined]
            AllocationId=self.allocation, InstanceId=self.lbs[lb], AllowReassociation=True
        )


@pytest.fixture
def elastic_ip(mocked_aws) -> ElasticIp:
    import boto3
    from mypy_boto3_ec2.type_defs import TagTypeDef

    from tests.helpers import MOTO_REGION

    ec2 = boto3.client("ec2", region_name=MOTO_REGION)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags: list[TagTypeDef] = [
        {"Key": "Project", "Value": "webinfra"},
        {"Key": "Stack", "Value": "test"},
        {"Key": "Role", "Value": "lb"},
    ]
    lbs = {}
    for name in ("lb-01", "lb-02"):
        made = ec2.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [*tags, {"Key": "Name", "Value": name}]}],
        )
        lbs[name] = made["Instances"][0]["InstanceId"]
    allocation = ec2.allocate_address(Domain="vpc", TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": tags}])[
        "AllocationId"
    ]
    ec2.allocate_address(Domain="vpc")  # another stack's address: the filters must leave it out
    filters = [{"Name": f"tag:{t['Key']}", "Values": [t["Value"]]} for t in tags]
    address = ElasticIp(ec2, allocation, lbs, filters)
    address.move_to("lb-01")
    return address


def pair_controller(cluster: Cluster, elastic_ip: ElasticIp, lb: str, **overrides) -> Controller:
    """The controller of one load balancer of a pair: keepalived's MASTER (both are, when cut off from
    each other), its instance id where cloud-init records it, the stack's Elastic IP to ask about."""
    state = cluster.base / f"{lb}-state"
    state.write_text("MASTER\n")
    instance_id = cluster.base / f"{lb}-instance-id"
    instance_id.write_text(elastic_ip.lbs[lb] + "\n")
    settings = dict(
        active_file=str(state),
        elastic_ip={"filters": elastic_ip.filters, "instance_id_file": str(instance_id)},
        region=None,  # the client's region: AWS_DEFAULT_REGION (mocked_aws)
        arbiter_interval=0.2,
        arbiter_valid_for=0.5,
        takeover_after=0.8,
    )
    return cluster.controller(**{**settings, **overrides})


def test_two_masters_of_a_pair_only_the_elastic_ips_holder_decides_and_the_other_holds_no_session(cluster, elastic_ip):
    """A pair cut off from each other: keepalived makes both MASTER. EC2 says where the address points;
    only that one decides, the other opens no connection (a session is the primary's lease)."""
    primary = cluster.servers["web-01"]
    lb_01 = pair_controller(cluster, elastic_ip, "lb-01")
    lb_02 = pair_controller(cluster, elastic_ip, "lb-02")
    verdicts = run_until(lb_01, "primary web-01")
    assert any(v.startswith("standby: taking over") for v in verdicts), verdicts  # waited takeover_after first
    arm(lb_01)
    for _ in range(5):
        assert lb_02.step().startswith("standby: keepalived's MASTER, but the Elastic IP is not here")
        time.sleep(0.2)
    sessions = failover_sessions(primary)
    lb_01.step()
    assert failover_sessions(primary) == sessions  # lb-01's own (watcher and actions); lb-02 opened none

    elastic_ip.move_to("lb-02")  # keepalived's notify_master on lb-02, or a person
    moved = time.monotonic()
    verdicts = run_until(lb_01, "standby: keepalived's MASTER, but the Elastic IP is not here", seconds=5)
    stopped = time.monotonic() - moved
    assert stopped < lb_01.settings.arbiter_valid_for + lb_01.settings.arbiter_interval + 0.5, (stopped, verdicts)
    wait_for("lb-01's sessions closed", lambda: failover_sessions(primary) == 0, seconds=5)
    verdicts = run_until(lb_02, "primary web-01", seconds=10)
    assert any(v.startswith("standby: taking over") for v in verdicts), verdicts
    arm(lb_02)  # from what it has seen itself: the primary semi-synchronous, a replica with everything


def test_a_lone_load_balancer_decides_until_ec2_says_a_joining_one_holds_the_address(cluster, elastic_ip):
    """lbCount 1 -> 2: the lone load balancer (no keepalived) decides, whether EC2 answers or not (EC2 is no
    condition for a single stack); once EC2 answers that the joining lb-02 holds the Elastic IP, only lb-02
    decides, for the minutes until lb-01 is replaced."""
    lone = pair_controller(cluster, elastic_ip, "lb-01", active_file=None)
    flaky = FlakyEc2()
    assert lone.settings.active_file is None and lone.arbiter is not None
    lone.arbiter._client = flaky
    flaky.broken = True  # EC2 out of reach from the start: it decides all the same
    run_until(lone, "primary web-01")
    arm(lone)
    assert lone.step() == "primary web-01"
    flaky.broken = False
    elastic_ip.move_to("lb-02")  # lb-02's keepalived, alone, made it active: its takeover moved the address
    run_until(lone, "standby: the Elastic IP points at", seconds=5)
    flaky.broken = True  # EC2 silent again: the last answer named lb-02, so it stays out
    joining = pair_controller(cluster, elastic_ip, "lb-02")
    run_until(joining, "primary web-01", seconds=10)
    kill(cluster.servers["web-01"])
    run_until(joining, "failed over to", seconds=30)
    for _ in range(3):  # the lone one stays out of it
        assert lone.step().startswith("standby: the Elastic IP points at"), lone.standby_reason


def test_a_holder_that_lost_the_elastic_ip_does_not_promote_even_on_a_stale_answer(cluster, elastic_ip):
    """The answer that the address is here still counts (its valid_for has not passed), but the address
    moved: the failover asks EC2 again right before promoting, and stops."""
    servers = cluster.servers
    lb_01 = pair_controller(cluster, elastic_ip, "lb-01", arbiter_interval=60.0, arbiter_valid_for=120.0)
    run_until(lb_01, "primary web-01", seconds=10)
    arm(lb_01)
    elastic_ip.move_to("lb-02")
    kill(servers["web-01"])
    run_until(lb_01, "not failing over: not confirmed")
    assert all(read_only(servers[name]) for name in ("web-02", "web-03"))
    assert any("not promoting" in said for said in cluster.said), cluster.said


def test_a_new_decider_does_not_make_the_primary_writable_while_it_cannot_see_every_server(cluster):
    """A controller that has not seen a primary since it began (its load balancer just took over) finds
    the primary of record read-only (it fenced itself) and a replica silent: that replica may have been
    promoted by the load balancer that decided before. It waits to see every server."""
    servers = cluster.servers
    servers["web-01"].sql("SET GLOBAL read_only = ON")  # as the self-fence leaves it
    kill(servers["web-03"])
    fresh = cluster.controller()
    verdicts = run_until(fresh, "web-01 is read-only and web-03 do not answer")
    assert read_only(servers["web-01"]), verdicts
    assert ("DatabaseAttention", 1, None) in cluster.metrics


def dump_thread_ids(server: MariaDB) -> set[int]:
    return {
        row["ID"]
        for row in server.sql(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND COMMAND = 'Binlog Dump'",
            (render.DB_REPLICATION_USER,),
        )
    }


@contextlib.contextmanager
def black_hole(port: int, hook: str = "output"):
    """Every TCP packet to or from `port` on this machine dropped (nftables, loopback included): no RST,
    no FIN gets through, as in the lab's black hole; what a relay cannot do (its kernel acknowledges).
    On `input`, the senders' kernels count their segments sent (unacknowledged), as across a network cut;
    on `output` they never leave."""
    table = f"webinfra_test_black_hole_{port}"
    rules = (
        f"table inet {table} {{\n chain {hook} {{\n  type filter hook {hook} priority -300; policy accept;\n"
        f"  tcp dport {port} drop\n  tcp sport {port} drop\n }}\n}}\n"
    )
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=False)


def answers_within(server: MariaDB, seconds: float) -> bool:
    """A new connection and a write, within `seconds` (a hung server: no)."""
    done = threading.Event()

    def ask() -> None:
        with contextlib.suppress(Exception):
            server.sql("INSERT INTO webinfra.messages (text, host) VALUES ('still answering', 'test')")
            done.set()

    threading.Thread(target=ask, daemon=True).start()
    return done.wait(seconds)


def test_a_primary_fallen_back_to_asynchronous_by_itself_ends_the_dump_threads_it_had_then(cluster):
    """The zones cut off from each other in the lab: the primary's one semi-synchronous replica silent,
    no controller reaching the primary, so it fell back to asynchronous replication by its own timeout.
    Its dump thread for that replica, left alone, was ended only by the replica's reconnection after the
    heal, which hung MariaDB for good (kill_zombie_dump_threads waiting on the ack receiver). The
    self-fence event ends that thread itself, at its first run after the fallback; the replica, back,
    reconnects, is left alone, catches up, and semi-sync is on again; the primary answers throughout."""
    primary = cluster.servers["web-01"]  # web-02 its one semi-synchronous replica
    cluster.servers["web-03"].sql("STOP SLAVE")
    primary.sql("SET GLOBAL rpl_semi_sync_master_enabled = ON")
    wait_for("a semi-synchronous replica", lambda: semi_sync(primary) == ("ON", 1), seconds=15)
    write(primary, "acknowledged")
    before = dump_thread_ids(primary)
    assert len(before) == 1, before
    try:
        with black_hole(primary.port):  # the replica's link: every packet lost, both ways
            began = time.monotonic()
            write(primary, "acknowledged by no replica")  # waits rpl_semi_sync_master_timeout, then asynchronous
            assert time.monotonic() - began >= SERVER_DEFAULTS.mariadb.semi_sync_timeout_ms / 1000 - 0.5
            assert semi_sync(primary)[0] == "OFF"
            wait_for("the dump thread of the fallback ended", lambda: not dump_thread_ids(primary) & before, 3)
            time.sleep(8)  # the replica gives up on its silent primary (slave_net_timeout) and retries
        wait_for("semi-sync on again", lambda: semi_sync(primary) == ("ON", 1), seconds=30)
        assert answers_within(primary, 5)
        reconnected = dump_thread_ids(primary)
        time.sleep(2.5)  # two more runs of the event: the new thread is left alone
        assert dump_thread_ids(primary) == reconnected
        assert primary.sql("SELECT * FROM mysql.webinfra_semi_sync_fallback") == ()
    finally:
        if not answers_within(primary, 5):  # hung: the fixture's SIGTERM would wait for ever
            primary.process.kill()


@contextlib.contextmanager
def end_dead_streams(server: MariaDB, base: pathlib.Path):
    """webinfra-db-end-dead-streams as its unit runs it: the declared script, with the declared
    environment file's values, as root on `server` (the test server's socket instead of Debian's)."""
    files = declared_web_files(server.name)
    unit = files["/etc/systemd/system/webinfra-db-end-dead-streams.service"]
    (command,) = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert "EnvironmentFile=/etc/webinfra/webinfra.env" in unit
    script = base / command.rsplit("/", 1)[1]
    script.write_text(files[command])
    script.chmod(0o755)
    environment = declared_environment(files)
    process = subprocess.Popen(
        [str(script)],
        env={"PATH": os.environ["PATH"], **environment, "WEBINFRA_DB_LOCAL_SOCKET": server.socket},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(10)


def test_a_replica_cut_off_silently_has_its_stream_ended_before_it_reconnects(cluster, tmp_path):
    """The lab's zones split with no write during it (issue 13, CI of stop 22): the primary's one
    semi-synchronous replica silent, semi-sync still on (no commit waited, so no fallback and no
    self-fence kill). Left alone, the primary's dump thread to it lived on, and the replica's reconnection
    after the heal hung MariaDB 10.11.19 for good. webinfra-db-end-dead-streams ends that thread while the
    replica is still cut off (no TCP acknowledgement for failover.dead_stream_after), before the replica
    gives up on its silent primary (replica_net_timeout); healed, the replica reconnects, semi-sync is on
    again, and the primary answers every connection throughout. A live replica's stream is left alone."""
    primary = cluster.servers["web-01"]  # web-02 its one semi-synchronous replica
    cluster.servers["web-03"].sql("STOP SLAVE")
    primary.sql("SET GLOBAL rpl_semi_sync_master_enabled = ON")
    wait_for("a semi-synchronous replica", lambda: semi_sync(primary) == ("ON", 1), seconds=15)
    write(primary, "acknowledged")
    (stream,) = dump_thread_ids(primary)
    try:
        with end_dead_streams(primary, tmp_path) as ender:
            time.sleep(4)  # heartbeats on a live stream: two dead_stream_afters, nothing ended
            assert dump_thread_ids(primary) == {stream}
            with black_hole(primary.port, "input"):  # the replica's link: every packet lost, both ways
                cut = time.monotonic()
                wait_for("the dead stream ended", lambda: stream not in dump_thread_ids(primary), seconds=10)
                ended_after = time.monotonic() - cut
                # before the replica gives up on its primary and reconnects
                assert ended_after < seconds(SERVER_DEFAULTS.failover.replica_net_timeout), ended_after
                assert semi_sync(primary)[0] == "ON"  # no commit waited: nothing else would have ended it
                time.sleep(seconds(SERVER_DEFAULTS.failover.replica_net_timeout) + 2)  # the replica retries
            wait_for("semi-sync on again", lambda: semi_sync(primary) == ("ON", 1), seconds=30)
            for _ in range(10):  # the reconnection hung every new connection: none now
                assert answers_within(primary, 2)
                time.sleep(0.2)
            write(primary, "acknowledged after the heal")
            wait_for(
                "the replica has it", lambda: "acknowledged after the heal" in texts(cluster.servers["web-02"]), 10
            )
        said = ender.stdout.read() if ender.stdout else ""
        assert f"ended binary-log dump thread {stream} to 127.0.0.1:" in said, said
        print(f"dead stream ended {ended_after:.1f} s after the cut; {said.strip()}")
    finally:
        if not answers_within(primary, 5):  # hung: the fixture's SIGTERM would wait for ever
            primary.process.kill()


class FlakyEc2:
    """moto's EC2 client, or no answer at all while `broken` (EC2 out of reach, throttled)."""

    def __init__(self):
        import boto3

        self.client, self.broken = boto3.client("ec2"), False

    def describe_addresses(self, **kwargs):
        if self.broken:
            raise ConnectionError("EC2 does not answer (test)")
        return self.client.describe_addresses(**kwargs)


def test_ec2_silent_stops_the_decider_and_it_starts_from_nothing_when_answers_return(cluster, elastic_ip):
    """No answer from EC2 (throttled, out of reach) until the last one no longer counts: the decider
    stops deciding and closes its sessions. Answers back: a takeover again (the wait, then only what it
    sees itself: a decider elsewhere may have acted meanwhile, the primary may have gone asynchronous)."""
    primary = cluster.servers["web-01"]
    lb_01 = pair_controller(cluster, elastic_ip, "lb-01")
    flaky = FlakyEc2()
    assert lb_01.arbiter is not None
    lb_01.arbiter._client = flaky
    run_until(lb_01, "primary web-01", seconds=10)
    arm(lb_01)
    flaky.broken = True
    run_until(lb_01, "standby: EC2 has not confirmed the Elastic IP is here", seconds=3)
    wait_for("its sessions closed", lambda: failover_sessions(primary) == 0, seconds=5)
    assert not lb_01.armed and lb_01.primary is None
    flaky.broken = False
    verdicts = run_until(lb_01, "primary web-01", seconds=10)
    assert any(v.startswith("standby: taking over") for v in verdicts), verdicts


def test_no_answer_right_before_a_promotion_postpones_it_and_the_next_poll_fails_over(cluster, elastic_ip):
    """The check right before promoting gets no answer from EC2 (twice): not promoted now, and the
    controller stays the decider, armed (only an answer naming another holder ends that); with EC2
    answering again, the next poll fails over."""
    servers = cluster.servers
    lb_01 = pair_controller(cluster, elastic_ip, "lb-01", arbiter_interval=60.0, arbiter_valid_for=120.0)
    flaky = FlakyEc2()
    assert lb_01.arbiter is not None
    lb_01.arbiter._client = flaky
    run_until(lb_01, "primary web-01", seconds=10)
    arm(lb_01)
    kill(servers["web-01"])
    flaky.broken = True
    run_until(lb_01, "not failing over: not confirmed")
    assert any("not promoting" in said and "now: EC2 did not confirm" in said for said in cluster.said)
    assert lb_01.armed and lb_01.holder_since is not None
    assert all(read_only(servers[name]) for name in ("web-02", "web-03"))
    flaky.broken = False
    run_until(lb_01, "failed over to")


def test_the_rendered_configuration_passes_the_controllers_own_check_and_a_wrong_servers_file_does_not(
    tmp_path, capsys
):
    """The configuration (user-data) with its servers file (from SSM, checked by the same command
    webinfra-config-sync runs before it installs one): data only, names web-NN and IPv4 addresses."""
    import json

    from failover.webinfra_failover import main
    from tests.provisioning.helpers import BACKENDS_2, PAIR, files_of, lb_config, runtime_files

    rendered = json.loads(files_of(lb_config(PAIR, "lb-01"))[render.FAILOVER_CONFIG]["content"])
    servers = json.loads(runtime_files(PAIR, BACKENDS_2)[render.FAILOVER_SERVERS])
    password = tmp_path / "db-failover.env"
    password.write_text("WEBINFRA_DB_FAILOVER_PASSWORD=secret\n")
    config, servers_file = tmp_path / "failover.json", tmp_path / "failover-servers.json"
    config.write_text(json.dumps({**rendered, "password_file": str(password), "servers_file": "/nonexistent"}))
    servers_file.write_text(json.dumps(servers))
    check = ["--check-config", "--config", str(config), "--servers", str(servers_file)]
    assert main(check) == 0
    assert "2 servers (web-01, web-02)" in capsys.readouterr().out
    one = servers["servers"][0]
    wrongs: tuple[object, ...] = (
        {"servers": servers["servers"] * 2},  # twice
        {**servers, "tls_ca": "/tmp/mine.pem"},  # anything but the servers
        {"servers": [{**one, "address": "attacker.example"}]},
        {"servers": [{**one, "name": "db; rm -rf /"}]},
        {"servers": [{**one, "port": 1}]},
        {"servers": []},
        "not json",
    )
    for wrong in wrongs:
        servers_file.write_text(wrong if isinstance(wrong, str) else json.dumps(wrong))
        assert main(check) == 2, wrong
    errors = capsys.readouterr().err
    assert "secret" not in errors
    # the message names the file that was wrong, not only the configuration it was checked with
    assert f"{config} with the servers in {servers_file}: " in errors, errors


def test_a_primary_that_stopped_answering_is_no_replica_failing_to_acknowledge():
    """Commits waiting on the primary count toward disarming (fallback_after) only between the primary's
    own answers: its last answer, seen again while its next poll times out (a dead primary under 8 writers),
    must not disarm automatic failover (CI: disarmed 1.5 s after the kill, so no failover at all)."""
    from failover.webinfra_failover import Observation

    now = [100.0]
    said: list[str] = []
    settings = Settings(
        servers=(("web-01", "127.0.0.1", 9), ("web-02", "127.0.0.1", 9)),
        user="webinfra_failover",
        password="unused",
        tls_ca="/nonexistent",
        fallback_after=1.5,
    )
    controller = Controller(settings, clock=lambda: now[0], say=said.append, metric=lambda *_: None)
    controller.armed = True

    def waiting(at: float) -> Observation:
        return Observation(
            "web-01",
            "127.0.0.1",
            9,
            at,
            reachable=True,
            read_only=False,
            semi_sync_on=True,
            semi_sync_waiting=8,
            semi_sync_acknowledged=500,
        )

    last_answer = waiting(100.0)
    for _ in range(20):  # 10 s of the same last answer: the primary is silent, not its replicas
        controller._manage_semi_sync(last_answer, {"web-01": last_answer})
        now[0] += 0.5
    assert controller.armed and not [s for s in said if "disarmed" in s], said
    for _ in range(5):  # answers again, commits still waiting for 2 s: that is no acknowledgement
        fresh = waiting(now[0])
        controller._manage_semi_sync(fresh, {"web-01": fresh})
        now[0] += 0.5
    assert not controller.armed and [s for s in said if "automatic failover disarmed" in s], said
