#!/bin/bash
# webinfra: the stack's full database backup (webinfra-db-backup.timer, daily), from a replica so the
# primary is not loaded: mariadb-backup streamed through zstd to the stack's S3 bucket, then a
# manifest (the backup's GTID position, size, times) written beside it. A backup without its manifest
# is unfinished and never restored (README: Backups and restore). The replicas' timers are staggered:
# one that finds a backup younger than WEBINFRA_BACKUP_FRESH_SECONDS skips, so the stack makes one a day
# while any replica runs.
set -euo pipefail
# The environment: /etc/webinfra/webinfra.env (the unit's EnvironmentFile).
say() { echo "webinfra-db-backup: $*"; }
aws_args=(--region "$WEBINFRA_AWS_REGION")
[ -z "${WEBINFRA_AWS_ENDPOINT_URL:-}" ] || aws_args+=(--endpoint-url "$WEBINFRA_AWS_ENDPOINT_URL")
socket=${WEBINFRA_DB_LOCAL_SOCKET:?}
target="s3://$WEBINFRA_BACKUP_BUCKET/$WEBINFRA_STACK/full"

if [ "$(mariadb --socket="$socket" -N -B -e 'SELECT @@global.read_only')" != 1 ]; then
    say "this server is the primary: a replica takes the backup"
    exit 0
fi
if ! mariadb --socket="$socket" -e 'SHOW SLAVE STATUS\G' | grep -q 'Slave_SQL_Running: Yes'; then
    say "this replica does not replicate: no backup from it"
    exit 1
fi
newest=$(aws "${aws_args[@]}" s3api list-objects-v2 --bucket "$WEBINFRA_BACKUP_BUCKET" \
    --prefix "$WEBINFRA_STACK/full/" --output text \
    --query "max_by(Contents[?ends_with(Key, '.manifest.json')] || \`[]\`, &LastModified).LastModified")
if [ -n "$newest" ] && [ "$newest" != None ] &&
    (($(date -u +%s) - $(date -u -d "$newest" +%s) < WEBINFRA_BACKUP_FRESH_SECONDS)); then
    say "the stack's newest full backup ($newest) is recent enough: none now"
    exit 0
fi

name="$(date -u +%Y%m%dT%H%M%SZ)-$(hostname)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
started=$(date -u +%s)
say "streaming a full backup to $target/$name.xbstream.zst"
if ! mariadb-backup --backup --socket="$socket" --stream=xbstream --slave-info 2>"$log" |
    zstd -q -3 | aws "${aws_args[@]}" s3 cp - "$target/$name.xbstream.zst"; then
    tail -20 "$log"
    say "FAILED: no manifest written, so this upload is never restored"
    exit 1
fi
# mariadb-backup names the position its copy is consistent at: the GTID a restore replays from.
gtid=$(grep -o "GTID of the last change '[^']*'" "$log" | tail -1 | cut -d"'" -f2)
[ -n "$gtid" ] || { tail -20 "$log"; say "FAILED: no GTID position in mariadb-backup's output"; exit 1; }
size=$(aws "${aws_args[@]}" s3api head-object --bucket "$WEBINFRA_BACKUP_BUCKET" \
    --key "$WEBINFRA_STACK/full/$name.xbstream.zst" --query ContentLength --output text)
printf '{"backup": "%s", "host": "%s", "gtid": "%s", "bytes": %s, "started": %s, "finished": %s, "server": "%s"}\n' \
    "$name.xbstream.zst" "$(hostname)" "$gtid" "$size" "$started" "$(date -u +%s)" \
    "$(mariadb --socket="$socket" -N -B -e 'SELECT VERSION()')" |
    aws "${aws_args[@]}" s3 cp - "$target/$name.manifest.json"
say "done: $name ($size bytes, GTID $gtid, $(($(date -u +%s) - started)) s)"
