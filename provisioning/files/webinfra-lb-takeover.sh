#!/bin/bash
# webinfra: the stack's Elastic IP belongs on the active load balancer of a pair, and only keepalived
# decides which one that is: Pulumi declares no association for a pair (one it owned would be dropped
# on `pulumi refresh` and re-created on lb-01 by the next `pulumi up`, even with lb-01 dead).
#   webinfra-lb-takeover              keepalived's notify_master: this host is now the active one
#   webinfra-lb-takeover --reconcile  every 30 s (webinfra-lb-eip.timer): if this host is the active
#                                     one, put the address back here should anything have moved it
# The instance role allows exactly this: finding the stack's load-balancer address
# (ec2:DescribeAddresses) and associating it with one of the stack's load balancers
# (ec2:AssociateAddress on that address and those instances). Nothing is called when the address is
# already here. Bounded retries; stops early if this host stops being the active one meanwhile.
set -euo pipefail
. /etc/webinfra/webinfra.env
log() { logger -t webinfra-lb-takeover -- "$*"; echo "webinfra-lb-takeover: $*"; }
is_master() { [ "$(cat /run/webinfra/lb-state 2>/dev/null)" = MASTER ]; }

case ${1:-} in
    "") webinfra-lb-state MASTER ;;
    --reconcile) is_master || exit 0 ;;
    *) echo "usage: webinfra-lb-takeover [--reconcile]" >&2; exit 2 ;;
esac

aws_args=(--region "$WEBINFRA_AWS_REGION" --output text)
if [ -n "${WEBINFRA_AWS_ENDPOINT_URL:-}" ]; then
    aws_args+=(--endpoint-url "$WEBINFRA_AWS_ENDPOINT_URL")
fi
# cloud-init records the instance id from the metadata service (the lab's NoCloud seed on the lab).
instance_id=$(cat /var/lib/cloud/data/instance-id)
filters=("Name=tag:Project,Values=webinfra" "Name=tag:Stack,Values=$WEBINFRA_STACK" "Name=tag:Role,Values=lb")

for attempt in $(seq 1 10); do
    if ! is_master; then
        log "no longer the active load balancer; leaving the Elastic IP where it is"
        exit 0
    fi
    if found=$(aws ec2 describe-addresses --filters "${filters[@]}" \
                   --query 'Addresses[0].[AllocationId,InstanceId]' "${aws_args[@]}"); then
        read -r allocation holder <<<"$found"
        if [ -n "$allocation" ] && [ "$allocation" != None ]; then
            if [ "$holder" = "$instance_id" ]; then
                [ -n "${1:-}" ] || log "Elastic IP $allocation already points at $instance_id"
                exit 0
            fi
            if aws ec2 associate-address --allocation-id "$allocation" --instance-id "$instance_id" --allow-reassociation \
                   "${aws_args[@]}" >/dev/null; then
                log "Elastic IP $allocation now points at $instance_id (was: $holder; attempt $attempt)"
                # The active load balancer is the one that can answer ACME challenges: renew from here.
                if systemctl is-enabled --quiet webinfra-certificate.timer 2>/dev/null; then
                    systemctl start --no-block webinfra-certificate.service
                fi
                exit 0
            fi
        fi
    fi
    log "could not move the Elastic IP yet (attempt $attempt/10)"
    sleep "$attempt"
done
log "gave up moving the Elastic IP to $instance_id"
exit 1
