#!/bin/bash
# webinfra: set up this host's MariaDB as the stack's primary or as a replica of it (idempotent).
# Primary: schema, users (replicated to every replica). Replica: wait for the stack's primary (bounded),
# seed from a consistent copy of its data, then GTID replication that survives reboots (master.info
# persists, relay_log_recovery is on).
#   webinfra-db-setup [--replica]   --replica: as a replica whatever this host was declared (scripts/restore
#                                   re-seeds every server but the primary, which may be web-01 no more)
set -euo pipefail
. /etc/webinfra/webinfra.env
. /etc/webinfra/secrets/db-app.env
. /etc/webinfra/secrets/db-replication.env
. /etc/webinfra/secrets/db-failover.env

state_dir=/var/lib/webinfra
initialised=$state_dir/db-initialised
install -d -m 0700 "$state_dir"

say() { echo "webinfra-db-setup: $*"; }
role=$WEBINFRA_ROLE
case ${1:-} in
    "") ;;
    --replica) role=replica ;;
    *) echo "webinfra-db-setup: unknown option $1" >&2; exit 2 ;;
esac

retry() {  # retry TRIES DELAY DESCRIPTION COMMAND...: bounded, never an open-ended wait
    local tries=$1 delay=$2 what=$3
    shift 3
    for _ in $(seq 1 "$tries"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep "$delay"
    done
    say "gave up waiting for $what after $tries attempts"
    return 1
}

retry 60 1 "the local MariaDB server" mariadb -e 'SELECT 1'
# Every server's own self-fence and dump-thread cleanup (not replicated; before db-users.sql, whose
# grant of the latter replicates): see webinfra-db-self-fence.sql and webinfra-db-end-dump-threads.sql.
mariadb < /etc/webinfra/db-self-fence.sql
mariadb < /etc/webinfra/db-end-dump-threads.sql

if [ "$role" = primary ]; then
    if [ ! -e "$initialised" ]; then
        # Start the binary log from a clean history, so replicas that fetch it from the beginning
        # replay only this stack's schema and users, not what the package's install did.
        mariadb -e 'RESET MASTER'
    fi
    mariadb < /opt/webinfra/app/schema.sql
    { printf "SET @app_password='%s', @replication_password='%s', @failover_password='%s';\n" \
          "$WEBINFRA_DB_PASSWORD" "$WEBINFRA_DB_REPLICATION_PASSWORD" "$WEBINFRA_DB_FAILOVER_PASSWORD"
      cat /etc/webinfra/db-users.sql; } | mariadb
    if [ ! -e "$initialised" ]; then
        # Replication settings pointing at itself, never started: the failover controller can make
        # this server a replica later by changing only the address.
        webinfra-db-follow "$WEBINFRA_PRIVATE_ADDRESS" current_pos --stored
        # The stack's first primary, at its first boot: the one time a server makes itself writable
        # (every server boots read-only; from now on the failover controller decides).
        mariadb -e 'SET GLOBAL read_only = OFF'
    fi
    touch "$initialised"
    say "primary ready: $(mariadb -N -e 'SELECT @@gtid_binlog_pos')"
    exit 0
fi

# --- replica ---------------------------------------------------------------------------------------
client_cnf=$(mktemp /run/webinfra-repl.XXXXXX.cnf)
trap 'rm -f "$client_cnf"' EXIT
# (connect-timeout is the mariadb client's own option: mariadb-dump, reading [client] too, refuses it)
printf '[client]\nuser=%s\npassword=%s\nhost=%s\nssl-ca=%s\nssl-verify-server-cert\n[mariadb-client]\nconnect-timeout=3\n' \
    "$WEBINFRA_DB_REPLICATION_USER" "$WEBINFRA_DB_REPLICATION_PASSWORD" "$WEBINFRA_DB_PRIMARY_HOST" "$WEBINFRA_DB_TLS_CA" > "$client_cnf"

# The stack's primary now: the writable one among the stack's web servers (the firewall's list, from
# SSM), since a failover may have moved it from the one this host was declared with.
current_primary() {
    local address
    for address in $(sed -n 's/^add element inet webinfra_host web_servers { \(.*\) }$/\1/p' /etc/webinfra/firewall-peers.nft | tr -d ,); do
        [ "$address" != "$WEBINFRA_PRIVATE_ADDRESS" ] || continue
        if [ "$(mariadb --defaults-extra-file="$client_cnf" -h "$address" -N -e 'SELECT @@global.read_only' 2>/dev/null)" = 0 ]; then
            echo "$address"
            return 0
        fi
    done
    return 1
}

if [ ! -e "$initialised" ]; then
    say "waiting for the stack's primary (declared: $WEBINFRA_DB_PRIMARY_HOST; up to 15 minutes)"
    retry 180 5 "a writable primary among the stack's web servers" current_primary
    primary=$(current_primary)
    # Seeded from a consistent copy of the primary's data, not from its binary log, which may have been
    # purged long ago (binlog_expire_logs_seconds): mariadb-dump in one consistent snapshot (InnoDB's,
    # with the binary-log position that matches it: no global read lock, writes go on), loaded without
    # binary logging, and the GTID position it ends at. The stack's users are this host's own (made from
    # the passwords it has), then replication continues from that position.
    mariadb -e "STOP SLAVE; RESET SLAVE ALL; RESET MASTER; SET GLOBAL gtid_slave_pos = '';"
    say "seeding from a consistent copy of $primary's data"
    { echo "SET SESSION sql_log_bin = 0;"
      mariadb-dump --defaults-extra-file="$client_cnf" -h "$primary" --single-transaction --master-data=1 --gtid \
          --databases "$WEBINFRA_DB_NAME"; } | mariadb
    { printf "SET SESSION sql_log_bin = 0; SET @app_password='%s', @replication_password='%s', @failover_password='%s';\n" \
          "$WEBINFRA_DB_PASSWORD" "$WEBINFRA_DB_REPLICATION_PASSWORD" "$WEBINFRA_DB_FAILOVER_PASSWORD"
      cat /etc/webinfra/db-users.sql; } | mariadb
    seeded=$(mariadb -N -e 'SELECT @@gtid_slave_pos')
    # Its own binary log starts where the copy does (not from nothing): its files then name the GTIDs
    # before them (webinfra-db-ship-binlogs, if it is promoted), and a backup of it names its position.
    [ -z "$seeded" ] || mariadb -e "SET GLOBAL gtid_binlog_state = '$seeded'"
    say "seeded at GTID $seeded: $(mariadb -N -e "SELECT COUNT(*) FROM $WEBINFRA_DB_NAME.messages") messages"
    webinfra-db-follow "$primary" slave_pos
    touch "$initialised"
fi

replicating() {
    mariadb -e 'SHOW SLAVE STATUS\G' | grep -q 'Slave_IO_Running: Yes' &&
    mariadb -e 'SHOW SLAVE STATUS\G' | grep -q 'Slave_SQL_Running: Yes' &&
    mariadb -N -e "SELECT 1 FROM information_schema.tables WHERE table_schema='$WEBINFRA_DB_NAME' AND table_name='messages'" | grep -q 1
}
if ! retry 120 1 "replication to start" replicating; then
    mariadb -e 'SHOW SLAVE STATUS\G' | grep -E 'Running|Last_.*Error|Gtid' >&2 || true
    exit 1
fi
say "replica ready: $(mariadb -N -e 'SELECT @@gtid_slave_pos')"
