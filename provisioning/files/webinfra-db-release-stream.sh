#!/bin/bash
# webinfra: before MariaDB starts on a replica (ExecStartPre), end this replica's previous replication
# stream on the primary. A replica that died with its host (power lost, network cut) leaves the
# primary's binlog dump thread for it blocked writing to a peer that is gone, retransmitting for
# up to 15 minutes; the replica's next connection waits for that thread to end, its I/O thread
# "connected" and receiving nothing (18 s in the lab, issue 12). KILL CONNECTION shuts the dead
# socket at once. The replication user may end its own connections; no privilege is needed.
# It never stops MariaDB from starting: an unreachable primary only means nothing to end.
set -uo pipefail
. /etc/webinfra/webinfra.env
# The server is not running yet: its replication settings are read from master.info, whose fourth
# line is the primary's address. Pointing at itself (a primary's stored settings): nothing to end.
primary=$(sed -n 4p /var/lib/mysql/master.info 2>/dev/null) && [ -n "$primary" ] || exit 0
[ "$primary" != "$WEBINFRA_PRIVATE_ADDRESS" ] || exit 0
. /etc/webinfra/secrets/db-replication.env || exit 0

on_primary() {
    # The password through a file descriptor, never in argv or the environment.
    # timeout: the client bounds only its connect; a primary that stalls later must not hold
    # MariaDB's start (Debian's unit allows it 15 minutes).
    timeout 5 mariadb --defaults-extra-file=<(printf '[client]\npassword="%s"\n' "$WEBINFRA_DB_REPLICATION_PASSWORD") \
        --host="$primary" --user="$WEBINFRA_DB_REPLICATION_USER" --ssl --ssl-ca="$WEBINFRA_DB_TLS_CA" \
        --ssl-verify-server-cert --connect-timeout=2 --batch --skip-column-names -e "$1"
}

# This MariaDB is not running: every stream the primary holds for this address is a dead one.
if ! streams=$(on_primary "SELECT ID FROM information_schema.PROCESSLIST
        WHERE COMMAND LIKE 'Binlog Dump%' AND HOST LIKE '$WEBINFRA_PRIVATE_ADDRESS:%'"); then
    echo "webinfra-db-release-stream: the primary $primary did not answer; nothing ended"
    exit 0
fi
for stream in $streams; do
    on_primary "KILL CONNECTION $stream" && echo "webinfra-db-release-stream: ended the dead stream $stream on $primary"
done
exit 0
