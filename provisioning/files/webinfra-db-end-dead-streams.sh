#!/bin/bash
# webinfra: end each binary-log dump thread whose replica has acknowledged nothing (TCP) for
# WEBINFRA_DB_DEAD_STREAM_AFTER_MS - a replica cut off silently - before that replica reconnects:
# MariaDB 10.11.19 then ends the old thread itself and hangs for good (README: automatic failover).
set -uo pipefail
after_ms=${WEBINFRA_DB_DEAD_STREAM_AFTER_MS:?webinfra.env sets it}
interval=${WEBINFRA_DB_DEAD_STREAM_CHECK_SECONDS:?webinfra.env sets it}
socket=${WEBINFRA_DB_LOCAL_SOCKET:?webinfra.env sets it}

sql() {
    timeout 5 mariadb --socket="$socket" --batch --skip-column-names -e "$1"
}

port=""
while :; do
    if [ -z "$port" ]; then
        port=$(sql "SELECT @@port" 2>/dev/null) || port=""
    fi
    if [ -n "$port" ]; then
        # Segments sent and not acknowledged (unacked; not Send-Q: a live replica that stopped reading,
        # its window zero, has Send-Q but none unacked) and no acknowledgement for the limit (lastack,
        # ms): the peers' address:port, as PROCESSLIST.HOST names them.
        dead=$(ss -Htni state established "( sport = :$port )" | awk -v after="$after_ms" '
            /^[^ \t]/ { peer = $4; next }
            / unacked:[1-9]/ && match($0, / lastack:[0-9]+/) {
                if (substr($0, RSTART + 9, RLENGTH - 9) + 0 >= after && peer ~ /^[0-9.]+:[0-9]+$/) print peer
            }')
        if [ -n "$dead" ]; then
            mapfile -t peers <<<"$dead"
            hosts=$(printf "'%s'," "${peers[@]}")
            threads=$(sql "SELECT ID, HOST FROM information_schema.PROCESSLIST
                WHERE COMMAND LIKE 'Binlog Dump%' AND HOST IN (${hosts%,})") || threads=""
            while read -r id host; do
                [ -n "$id" ] || continue
                sql "KILL CONNECTION $id" 2>/dev/null &&
                    echo "webinfra-db-end-dead-streams: ended binary-log dump thread $id to $host" \
                        "(no TCP acknowledgement for ${after_ms} ms or more)"
            done <<<"$threads"
        fi
    fi
    sleep "$interval"
done
