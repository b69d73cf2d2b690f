#!/bin/bash
# webinfra: keepalived's notify_master on a load balancer of a pair. This host is now the active
# one, so the stack's Elastic IP must point at it. The instance role allows exactly this: finding
# the stack's load-balancer address (ec2:DescribeAddresses) and associating it with one of the
# stack's load balancers (ec2:AssociateAddress on that address and those instances).
# Bounded retries; stops early if this host stops being the active one meanwhile.
set -euo pipefail
. /etc/webinfra/webinfra.env
log() { logger -t webinfra-lb-takeover -- "$*"; echo "webinfra-lb-takeover: $*"; }

webinfra-lb-state MASTER

aws_args=(--region "$WEBINFRA_AWS_REGION" --output text)
if [ -n "${WEBINFRA_AWS_ENDPOINT_URL:-}" ]; then
    aws_args+=(--endpoint-url "$WEBINFRA_AWS_ENDPOINT_URL")
fi
# cloud-init records the instance id from the metadata service (the lab's NoCloud seed on the lab).
instance_id=$(cat /var/lib/cloud/data/instance-id)
filters=("Name=tag:Project,Values=webinfra" "Name=tag:Stack,Values=$WEBINFRA_STACK" "Name=tag:Role,Values=lb")

for attempt in $(seq 1 10); do
    if [ "$(cat /run/webinfra/lb-state 2>/dev/null)" != MASTER ]; then
        log "no longer the active load balancer; leaving the Elastic IP where it is"
        exit 0
    fi
    if allocation=$(aws ec2 describe-addresses --filters "${filters[@]}" --query 'Addresses[0].AllocationId' "${aws_args[@]}") &&
       [ -n "$allocation" ] && [ "$allocation" != None ] &&
       aws ec2 associate-address --allocation-id "$allocation" --instance-id "$instance_id" --allow-reassociation \
           "${aws_args[@]}" >/dev/null; then
        log "Elastic IP $allocation now points at $instance_id (attempt $attempt)"
        # The active load balancer is the one that can answer ACME challenges: renew from here.
        if systemctl is-enabled --quiet webinfra-certificate.timer 2>/dev/null; then
            systemctl start --no-block webinfra-certificate.service
        fi
        exit 0
    fi
    log "could not move the Elastic IP yet (attempt $attempt/10)"
    sleep "$attempt"
done
log "gave up moving the Elastic IP to $instance_id"
exit 1
