#!/bin/bash
# webinfra: at every boot, before the app starts: a server that believes it is the primary checks
# that no peer was promoted while it was away (scripts/promote). If one was, it rejoins as that
# peer's replica instead of taking writes of its own: no split brain. Peers that do not answer
# (a whole stack rebooting) change nothing.
set -euo pipefail
. /etc/webinfra/webinfra.env
[ "$(cat /etc/webinfra/db-role 2>/dev/null || echo "$WEBINFRA_ROLE")" = primary ] || exit 0
. /etc/webinfra/secrets/db-app.env
export MYSQL_PWD=$WEBINFRA_DB_PASSWORD
for _ in $(seq 1 30); do mariadb -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
for peer in ${WEBINFRA_WEB_ADDRESSES//,/ }; do
    [ "$peer" = "$WEBINFRA_PRIVATE_ADDRESS" ] && continue
    writable=$(timeout 5 mariadb -h "$peer" -u "$WEBINFRA_DB_USER" --connect-timeout=3 --ssl-ca="$WEBINFRA_DB_TLS_CA" \
        --ssl-verify-server-cert -N -e 'SELECT @@global.read_only = 0' 2>/dev/null) || continue
    if [ "$writable" = 1 ]; then
        echo "webinfra-db-fence: $peer was promoted while this server was away: rejoining as its replica"
        unset MYSQL_PWD
        exec webinfra-db-follow "$peer" current_pos
    fi
done
echo "webinfra-db-fence: no other primary answers; staying primary"
