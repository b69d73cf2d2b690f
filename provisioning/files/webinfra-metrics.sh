#!/bin/bash
# webinfra: publish this host's health to CloudWatch (namespace webinfra/<stack>), once a minute
# (webinfra-metrics.timer). The load balancer: how many web servers are in rotation. A replica:
# whether replication runs and how far behind it is. The primary: whether semi-synchronous
# replication is on. The stack's alarms watch these.
set -euo pipefail
. /etc/webinfra/webinfra.env
aws_args=(--region "$WEBINFRA_AWS_REGION")
if [ -n "${WEBINFRA_AWS_ENDPOINT_URL:-}" ]; then
    aws_args+=(--endpoint-url "$WEBINFRA_AWS_ENDPOINT_URL")
fi
host=$(hostname)
metric() {  # metric NAME VALUE UNIT
    printf '{"MetricName":"%s","Dimensions":[{"Name":"Host","Value":"%s"}],"Value":%s,"Unit":"%s"}' "$1" "$host" "$2" "$3"
}

role=$WEBINFRA_ROLE
if [ "$role" != lb ]; then
    # What the database is now (a failover or a promotion changes it): writable is the primary.
    role=$(mariadb -N -e 'SELECT IF(@@global.read_only, "replica", "primary")')
fi
case $role in
    lb)
        # HAProxy's CSV statistics: column 1 the proxy, 2 the server, 18 its status.
        healthy=$(curl -fsS --max-time 3 "http://127.0.0.1:${WEBINFRA_STATS_PORT:-8404}/stats;csv" |
                  awk -F, '$1 == "web" && $2 != "BACKEND" && $2 != "FRONTEND" && $18 ~ /^UP/ { n++ } END { print n + 0 }')
        data="[$(metric HealthyBackends "$healthy" Count)]" ;;
    replica)
        status=$(mariadb -e 'SHOW SLAVE STATUS\G')
        running=0
        if grep -q 'Slave_IO_Running: Yes' <<<"$status" && grep -q 'Slave_SQL_Running: Yes' <<<"$status"; then
            running=1
        fi
        lag=$(awk '/Seconds_Behind_Master:/ { print $2 }' <<<"$status")
        data="[$(metric ReplicationRunning "$running" Count)"
        if [[ $lag =~ ^[0-9]+$ ]]; then
            data+=",$(metric ReplicationLagSeconds "$lag" Seconds)"
        fi
        data+="]" ;;
    primary)
        # Semi-synchronous replication in force (1), or fallen back to asynchronous (0): ON with no
        # replica connected waits for nobody (rpl_semi_sync_master_wait_no_slave = OFF).
        clients=$(mariadb -N -e "SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'" | awk '{ print $2 + 0 }')
        semisync=$(mariadb -N -e "SHOW STATUS LIKE 'Rpl_semi_sync_master_status'" |
                   awk -v clients="$clients" '{ print ($2 == "ON" && clients > 0) ? 1 : 0 }')
        data="[$(metric SemiSyncOn "$semisync" Count),$(metric SemiSyncReplicas "$clients" Count)]" ;;
    *)
        exit 0 ;;
esac
aws cloudwatch put-metric-data --namespace "webinfra/$WEBINFRA_STACK" --metric-data "$data" "${aws_args[@]}"
