#!/bin/bash
# webinfra: at every boot, before the app starts: a server that believes it is the primary checks
# that no peer was promoted while it was away (scripts/promote). If one was, it rejoins as that
# peer's replica instead of taking writes of its own: no split brain. Peers that do not answer
# (a whole stack rebooting) change nothing.
set -euo pipefail
. /etc/webinfra/webinfra.env
[ "$(cat /etc/webinfra/db-role 2>/dev/null || echo "$WEBINFRA_ROLE")" = primary ] || exit 0
. /etc/webinfra/secrets/db-app.env
. /etc/webinfra/secrets/db-replication.env
export MYSQL_PWD=$WEBINFRA_DB_PASSWORD
for _ in $(seq 1 30); do mariadb -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
for peer in ${WEBINFRA_WEB_ADDRESSES//,/ }; do
    [ "$peer" = "$WEBINFRA_PRIVATE_ADDRESS" ] && continue
    writable=$(timeout 5 mariadb -h "$peer" -u "$WEBINFRA_DB_USER" --connect-timeout=3 --ssl-ca="$WEBINFRA_DB_TLS_CA" \
        --ssl-verify-server-cert -N -e 'SELECT @@global.read_only = 0' 2>/dev/null) || continue
    if [ "$writable" = 1 ]; then
        echo "webinfra-db-fence: $peer was promoted while this server was away: rejoining as its replica"
        printf '[mariadb]\n# webinfra-db-fence: demoted, %s is the primary\nread_only = ON\n' "$peer" \
            > /etc/mysql/mariadb.conf.d/61-webinfra-role.cnf
        unset MYSQL_PWD
        mariadb <<SQL
SET GLOBAL read_only = ON;
STOP SLAVE;
CHANGE MASTER TO MASTER_HOST = '$peer', MASTER_PORT = 3306, MASTER_USER = '$WEBINFRA_DB_REPLICATION_USER',
    MASTER_PASSWORD = '$WEBINFRA_DB_REPLICATION_PASSWORD', MASTER_CONNECT_RETRY = 5, MASTER_SSL = 1,
    MASTER_SSL_CA = '$WEBINFRA_DB_TLS_CA', MASTER_SSL_VERIFY_SERVER_CERT = 1, MASTER_USE_GTID = current_pos;
START SLAVE;
SQL
        echo replica > /etc/webinfra/db-role
        echo "$peer" > /etc/webinfra/db-primary
        exit 0
    fi
done
echo "webinfra-db-fence: no other primary answers; staying primary"
