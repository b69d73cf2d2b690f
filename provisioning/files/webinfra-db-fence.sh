#!/bin/bash
# webinfra: at every boot, before the app starts. Every server boots read-only (60-webinfra.cnf); one
# that replicates from no one (an old primary: its replication settings point at itself) checks
# whether a peer is writable now, and if so rejoins as that peer's replica, continuing from its own
# history (current_pos). If it holds writes the peer lacks, replication refuses to start (GTID strict
# mode): it stays read-only and out of the rotation, and the failover controller raises the alarm.
# No writable peer (a whole stack rebooting): nothing here; the failover controller makes the
# primary of record writable again once it sees it has everything.
set -euo pipefail
. /etc/webinfra/webinfra.env
. /etc/webinfra/secrets/db-app.env
for _ in $(seq 1 30); do mariadb -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
source_host=$(mariadb -N -B -e 'SHOW SLAVE STATUS' | cut -f2)
[ -z "$source_host" ] || [ "$source_host" = "$WEBINFRA_PRIVATE_ADDRESS" ] || exit 0
export MYSQL_PWD=$WEBINFRA_DB_PASSWORD
for peer in ${WEBINFRA_WEB_ADDRESSES//,/ }; do
    [ "$peer" = "$WEBINFRA_PRIVATE_ADDRESS" ] && continue
    writable=$(timeout 5 mariadb -h "$peer" -u "$WEBINFRA_DB_USER" --connect-timeout=3 --ssl-ca="$WEBINFRA_DB_TLS_CA" \
        --ssl-verify-server-cert -N -e 'SELECT @@global.read_only = 0' 2>/dev/null) || continue
    if [ "$writable" = 1 ]; then
        echo "webinfra-db-fence: $peer is the primary now: rejoining as its replica"
        unset MYSQL_PWD
        exec webinfra-db-follow "$peer" current_pos
    fi
done
echo "webinfra-db-fence: no writable peer answers; staying read-only for the failover controller to decide"
