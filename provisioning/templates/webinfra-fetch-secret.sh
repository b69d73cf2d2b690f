#!/bin/bash
# webinfra: fetch one secret from SSM Parameter Store with the instance role and write it to a
# root-only file, checked for its expected shape.
#   webinfra-fetch-secret PARAMETER FILE env:KEY   ->  FILE holds KEY=value (a generated password)
#   webinfra-fetch-secret PARAMETER FILE pem       ->  FILE holds PEM blocks (certificate and key)
# Retries for a bounded time: the instance profile's credentials and the network can take a few
# seconds to appear after boot.
set -euo pipefail
. /etc/webinfra/webinfra.env
parameter=$1 file=$2 format=$3

aws_args=(--region "$WEBINFRA_AWS_REGION" --output text)
if [ -n "${WEBINFRA_AWS_ENDPOINT_URL:-}" ]; then
    aws_args+=(--endpoint-url "$WEBINFRA_AWS_ENDPOINT_URL")
fi

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
value=""
for attempt in $(seq 1 30); do
    if value=$(aws ssm get-parameter --name "$parameter" --with-decryption \
            --query Parameter.Value "${aws_args[@]}" 2>"$errors"); then
        break
    fi
    echo "webinfra-fetch-secret: $parameter not readable yet (attempt $attempt/30): $(tail -n 1 "$errors")" >&2
    value=""
    sleep 2
done
if [ -z "$value" ]; then
    echo "webinfra-fetch-secret: gave up on $parameter" >&2
    exit 1
fi

umask 077
install -d -m 0700 "$(dirname "$file")"
tmp=$(mktemp "$file.XXXXXX")
case $format in
    env:*)
        # Generated passwords are alphanumeric; anything else means a wrong or tampered value.
        if [[ ! $value =~ ^[A-Za-z0-9]{16,128}$ ]]; then
            echo "webinfra-fetch-secret: $parameter does not look like a generated password" >&2
            rm -f "$tmp"; exit 1
        fi
        printf '%s=%s\n' "${format#env:}" "$value" > "$tmp" ;;
    pem)
        if ! grep -q -- '-----BEGIN CERTIFICATE-----' <<<"$value" || ! grep -q -- 'PRIVATE KEY-----' <<<"$value"; then
            echo "webinfra-fetch-secret: $parameter is not a certificate with its key" >&2
            rm -f "$tmp"; exit 1
        fi
        printf '%s\n' "$value" > "$tmp" ;;
    *)
        echo "webinfra-fetch-secret: unknown format $format" >&2
        rm -f "$tmp"; exit 2 ;;
esac
mv "$tmp" "$file"
echo "webinfra-fetch-secret: $parameter written to $file"
