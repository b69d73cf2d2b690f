#!/bin/bash
# webinfra: make this server a read-only replica of PRIMARY, over verified TLS. The one place
# replication settings are written with their credentials: the first boot (webinfra-db-setup) and
# scripts/promote call it. The failover controller then changes only the address (CHANGE MASTER keeps
# the user, password and TLS settings it is not given), and rejoins a returning primary only after it
# has checked that it holds nothing the primary lacks.
#   webinfra-db-follow PRIMARY slave_pos|current_pos [--stored]
# --stored: write the settings without starting replication: the first primary points at itself
# (replication never runs), so that it can be made a replica later without its credentials.
set -euo pipefail
. /etc/webinfra/webinfra.env
. /etc/webinfra/secrets/db-replication.env
primary=$1 gtid_mode=$2 start=yes
case $gtid_mode in slave_pos|current_pos) ;; *) echo "webinfra-db-follow: GTID mode must be slave_pos or current_pos" >&2; exit 2 ;; esac
case ${3:-} in "") ;; --stored) start=no ;; *) echo "webinfra-db-follow: unknown option $3" >&2; exit 2 ;; esac

{
    # A replica: read-only, and without semi-sync's primary side (it would wait, for each transaction
    # it applies, for an acknowledgement that no one sends). It serves no replica: the binary-log dump
    # threads left from when it was a primary are ended first (webinfra-db-end-dump-threads.sql).
    if [ "$start" = yes ]; then
        echo "SET GLOBAL read_only = ON; CALL mysql.webinfra_end_dump_threads();"
        echo "SET GLOBAL rpl_semi_sync_master_enabled = OFF;"
    fi
    # MASTER_CONNECT_RETRY 1: a lost primary is tried again every second (a restarted MariaDB is back
    # within seconds, and until this replica reconnects it may not know it is complete).
    cat <<SQL
STOP SLAVE;
CHANGE MASTER TO
    MASTER_HOST = '$primary',
    MASTER_PORT = 3306,
    MASTER_USER = '$WEBINFRA_DB_REPLICATION_USER',
    MASTER_PASSWORD = '$WEBINFRA_DB_REPLICATION_PASSWORD',
    MASTER_CONNECT_RETRY = 1,
    MASTER_HEARTBEAT_PERIOD = $WEBINFRA_DB_HEARTBEAT_PERIOD,
    MASTER_SSL = 1,
    MASTER_SSL_CA = '$WEBINFRA_DB_TLS_CA',
    MASTER_SSL_VERIFY_SERVER_CERT = 1,
    MASTER_USE_GTID = $gtid_mode;
SQL
    if [ "$start" = yes ]; then echo "START SLAVE;"; fi
} | mariadb
if [ "$start" = yes ]; then
    echo "webinfra-db-follow: replicating from $primary ($gtid_mode)"
else
    echo "webinfra-db-follow: replication settings stored (pointing at $primary, not started)"
fi
