#!/bin/bash
# webinfra: the stack's full database backup (webinfra-db-backup.timer, daily), from a replica so the
# primary is not loaded: mariadb-backup streamed through zstd to the stack's S3 bucket, then a
# manifest (the backup's GTID position, size, times) written beside it. A backup without its manifest
# is unfinished and never restored (README: Backups and restore). The replicas' timers are staggered:
# one that finds a backup (or another replica's claim to be taking one) younger than
# WEBINFRA_BACKUP_FRESH_SECONDS skips, so the stack makes one a day while any replica runs.
set -euo pipefail
# The environment: /etc/webinfra/webinfra.env (the unit's EnvironmentFile).
say() { echo "webinfra-db-backup: $*"; }
aws_args=(--region "$WEBINFRA_AWS_REGION")
[ -z "${WEBINFRA_AWS_ENDPOINT_URL:-}" ] || aws_args+=(--endpoint-url "$WEBINFRA_AWS_ENDPOINT_URL")
socket=${WEBINFRA_DB_LOCAL_SOCKET:?}
db() { mariadb --socket="$socket" -N -B -e "$1"; }
prefix="$WEBINFRA_STACK/full"
target="s3://$WEBINFRA_BACKUP_BUCKET/$prefix"
work=$(mktemp -d)
# A run that fails says so to the stack's backup-failed alarm (a skipped turn is no failure: exit 0).
finish() {
    local status=$?
    rm -rf "$work"
    if [ "$status" -ne 0 ]; then
        aws "${aws_args[@]}" cloudwatch put-metric-data --namespace "webinfra/$WEBINFRA_STACK" \
            --metric-name BackupRunFailed --value 1 --unit Count ||
            say "could not report the failure to CloudWatch"
    fi
}
trap finish EXIT
# Two uploads at a time, not ten: the CLI's buffers stay small on a 1 GB replica.
printf '[default]\ns3 =\n  max_concurrent_requests = 2\n' >"$work/aws-config"
export AWS_CONFIG_FILE="$work/aws-config"

# A replica only (the primary is not loaded with it), and one that has everything: a stalled replica
# (its primary's binary logs purged, cut off, diverged) would upload old data every day.
read_only=$(db 'SELECT @@global.read_only')
if [ "$read_only" != 1 ]; then
    say "this server is the primary: a replica takes the backup"
    exit 0
fi
status=$(mariadb --socket="$socket" -e 'SHOW SLAVE STATUS\G')
field() { awk -v name="$1:" '$1 == name { print $2 }' <<<"$status"; }
lag=$(field Seconds_Behind_Master)
if [ "$(field Slave_IO_Running)" != Yes ] || [ "$(field Slave_SQL_Running)" != Yes ] ||
    [ "$(field Last_IO_Errno)" != 0 ] || [ "$(field Last_SQL_Errno)" != 0 ] ||
    ! [[ $lag =~ ^[0-9]+$ ]] || ((lag > WEBINFRA_MAX_LAG)); then
    say "this replica is not replicating and caught up (lag: ${lag:-none}): no backup from it"
    exit 1
fi

# The newest manifest, or claim of one under way, of the stack (--output json: the query sees every page).
recent() {
    aws "${aws_args[@]}" s3api list-objects-v2 --bucket "$WEBINFRA_BACKUP_BUCKET" --prefix "$prefix/" \
        --output json --query "max_by(Contents[?ends_with(Key, '$1')] || \`[]\`, &LastModified).LastModified" |
        tr -d '"'
}
young() { [ "$1" != null ] && (($(date -u +%s) - $(date -u -d "$1" +%s) < $2)); }
manifest=$(recent .manifest.json)
claim=$(recent .started)
if young "$manifest" "$WEBINFRA_BACKUP_FRESH_SECONDS"; then
    say "the stack's newest full backup ($manifest) is recent enough: none now"
    exit 0
fi
# A claim counts while no backup finished after it (a finished one's claim stays in the bucket).
if young "$claim" 3600 && { [ "$manifest" = null ] || [[ $claim > $manifest ]]; }; then
    say "another replica began one at $claim: none now"
    exit 0
fi

name="$(date -u +%Y%m%dT%H%M%SZ)-$(hostname)"
started=$(date -u +%s)
echo "{\"host\": \"$(hostname)\", \"started\": $started}" | aws "${aws_args[@]}" s3 cp - "$target/$name.started"
datadir=$(db 'SELECT @@datadir')
size=$(du -sb "$datadir" | cut -f1)  # the upload's part size follows (over 80 GB needs it)
say "streaming a full backup of $size bytes of data to $target/$name.xbstream.zst"
mkfifo "$work/stream"
aws "${aws_args[@]}" s3 cp - "$target/$name.xbstream.zst" --expected-size "$size" <"$work/stream" &
upload=$!
# A backup that fails midway must not complete its upload (S3 would hold a clean-looking, truncated
# object): the upload is killed first, and the bucket's lifecycle removes the unfinished parts.
if ! { mariadb-backup --backup --socket="$socket" --stream=xbstream --slave-info 2>"$work/log" ||
    { kill "$upload"; false; }; } | zstd -q -3 >"$work/stream"; then
    tail -20 "$work/log"
    say "FAILED: no manifest written, so this backup is never restored"
    exit 1
fi
if ! wait "$upload"; then
    say "FAILED: the upload to S3 did not finish; no manifest written"
    exit 1
fi
# mariadb-backup names the position its copy is consistent at (read while commits were blocked): the
# GTID a point-in-time restore replays the binary logs from.
gtid=$(grep -o "GTID of the last change '[^']*'" "$work/log" | tail -1 | cut -d"'" -f2)
[ -n "$gtid" ] || { tail -20 "$work/log"; say "FAILED: no GTID position in mariadb-backup's output"; exit 1; }
bytes=$(aws "${aws_args[@]}" s3api head-object --bucket "$WEBINFRA_BACKUP_BUCKET" \
    --key "$prefix/$name.xbstream.zst" --query ContentLength --output text)
printf '{"backup": "%s", "host": "%s", "gtid": "%s", "bytes": %s, "data_bytes": %s, "started": %s, "finished": %s, "server": "%s"}\n' \
    "$name.xbstream.zst" "$(hostname)" "$gtid" "$bytes" "$size" "$started" "$(date -u +%s)" "$(db 'SELECT VERSION()')" |
    aws "${aws_args[@]}" s3 cp - "$target/$name.manifest.json"
say "done: $name ($bytes bytes, GTID $gtid, $(($(date -u +%s) - started)) s)"
