#!/bin/bash
# webinfra: fetch this host's secrets from SSM Parameter Store with the instance role.
# Writes one root-only env file per consumer under /etc/webinfra/secrets/ so each service gets
# only what it needs. Retries for a bounded time: the instance profile's credentials and the
# network can take a few seconds to appear after boot.
set -euo pipefail
. /etc/webinfra/webinfra.env

aws_args=(--region "$WEBINFRA_AWS_REGION" --output text)
if [ -n "${WEBINFRA_AWS_ENDPOINT_URL:-}" ]; then
    aws_args+=(--endpoint-url "$WEBINFRA_AWS_ENDPOINT_URL")
fi

fetch() {
    local name=$1 value attempt
    for attempt in $(seq 1 30); do
        if value=$(aws ssm get-parameter --name "$name" --with-decryption \
                --query Parameter.Value "${aws_args[@]}" 2>/run/webinfra-fetch.err); then
            # Generated passwords are alphanumeric; anything else means a wrong or tampered value.
            if [[ ! $value =~ ^[A-Za-z0-9]{16,128}$ ]]; then
                echo "webinfra-fetch-secrets: $name does not look like a generated password" >&2
                return 1
            fi
            printf '%s' "$value"
            return 0
        fi
        echo "webinfra-fetch-secrets: $name not readable yet (attempt $attempt/30): $(tail -n 1 /run/webinfra-fetch.err)" >&2
        sleep 2
    done
    echo "webinfra-fetch-secrets: gave up on $name" >&2
    return 1
}

umask 077
install -d -m 0700 /etc/webinfra/secrets
write_env() {  # write_env FILE KEY PARAMETER
    local tmp value
    value=$(fetch "$3")
    tmp=$(mktemp "$1.XXXXXX")
    printf '%s=%s\n' "$2" "$value" > "$tmp"
    mv "$tmp" "$1"
}
write_env /etc/webinfra/secrets/db-app.env WEBINFRA_DB_PASSWORD "$WEBINFRA_SSM_DB_APP_PASSWORD"
write_env /etc/webinfra/secrets/db-replication.env WEBINFRA_DB_REPLICATION_PASSWORD "$WEBINFRA_SSM_DB_REPLICATION_PASSWORD"
rm -f /run/webinfra-fetch.err
echo "webinfra-fetch-secrets: secrets written under /etc/webinfra/secrets"
