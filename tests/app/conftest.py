"""Fixtures of the app tests: a real MariaDB primary and replica, and the app served on each (the
servers and the app themselves: tests/app/helpers.py)."""

from __future__ import annotations

import pytest

from provisioning import render
from tests.app.helpers import (
    App,
    MariaDB,
    Stack,
    app_env,
    make_tls,
    password,
    start_app,
    start_mariadb,
    users_script,
    wait_for,
)


@pytest.fixture(scope="session")
def databases(tmp_path_factory):
    base = tmp_path_factory.mktemp("mariadb")
    app_password, replication_password, failover_password = password(), password(), password()
    tls = make_tls(base)
    primary = start_mariadb(base, "web-01", "primary", tls)
    replica = start_mariadb(base, "web-02", "replica", tls)
    try:
        # The primary's boot, as webinfra-db-setup does it: clean binlog, schema, users (stdin).
        primary.client("RESET MASTER;")
        primary.client((render.APP_DIR / "schema.sql").read_text())
        stack = Stack(primary, replica, app_password, replication_password, tls, failover_password)
        primary.client(users_script(stack))
        primary.client(users_script(stack))  # ...and twice, since boots re-run it (idempotent)
        # Every server boots read-only; the first primary's first boot makes it writable (webinfra-db-setup).
        primary.client("SET GLOBAL read_only = OFF;")
        replica.client(
            f"""STOP SLAVE; RESET SLAVE ALL; RESET MASTER; SET GLOBAL gtid_slave_pos = '';
            CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port},
            MASTER_USER='{render.DB_REPLICATION_USER}',
            MASTER_PASSWORD='{replication_password}', MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos,
            MASTER_SSL=1, MASTER_SSL_CA='{tls / "ca.pem"}', MASTER_SSL_VERIFY_SERVER_CERT=1;
            START SLAVE;"""
        )
        wait_for("replication", lambda: replica.sql("SHOW TABLES FROM webinfra LIKE 'messages'"), seconds=60)
        # What the failover controller does once a replica has caught up: semi-synchronous on the primary.
        primary.sql("SET GLOBAL rpl_semi_sync_master_enabled = ON")
        yield stack
    finally:
        for server in (replica, primary):
            server.stop()


@pytest.fixture(scope="session")
def apps(databases, tmp_path_factory):
    """The app on the primary and on the replica, as each web server runs it."""
    logs = tmp_path_factory.mktemp("apps")
    primary = start_app(logs, app_env(databases, databases.primary, "primary"))
    replica = start_app(logs, app_env(databases, databases.replica, "replica"))
    yield {"primary": primary, "replica": replica}
    for app in (primary, replica):
        app.process.terminate()
        app.process.wait(timeout=30)


@pytest.fixture
def start_extra_app(databases, tmp_path):
    started = []

    def start(server: MariaDB, role: str, **overrides) -> App:
        app = start_app(tmp_path, app_env(databases, server, role, **overrides))
        started.append(app)
        return app

    yield start
    for app in started:
        app.process.terminate()
        app.process.wait(timeout=30)
