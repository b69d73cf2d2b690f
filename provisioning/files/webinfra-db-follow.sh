#!/bin/bash
# webinfra: make this server a read-only replica of PRIMARY, over verified TLS, and say so to the
# app (db-role, db-primary). The one place replication is pointed anywhere: the first boot
# (webinfra-db-setup), a returning primary (webinfra-db-fence) and scripts/promote all call it.
#   webinfra-db-follow PRIMARY slave_pos|current_pos
set -euo pipefail
. /etc/webinfra/webinfra.env
. /etc/webinfra/secrets/db-replication.env
primary=$1 gtid_mode=$2
case $gtid_mode in slave_pos|current_pos) ;; *) echo "webinfra-db-follow: GTID mode must be slave_pos or current_pos" >&2; exit 2 ;; esac

printf '[mariadb]\n# webinfra-db-follow: a replica of %s\nread_only = ON\n' "$primary" \
    > /etc/mysql/mariadb.conf.d/61-webinfra-role.cnf
mariadb <<SQL
SET GLOBAL read_only = ON;
STOP SLAVE;
CHANGE MASTER TO
    MASTER_HOST = '$primary',
    MASTER_PORT = 3306,
    MASTER_USER = '$WEBINFRA_DB_REPLICATION_USER',
    MASTER_PASSWORD = '$WEBINFRA_DB_REPLICATION_PASSWORD',
    MASTER_CONNECT_RETRY = 5,
    MASTER_SSL = 1,
    MASTER_SSL_CA = '$WEBINFRA_DB_TLS_CA',
    MASTER_SSL_VERIFY_SERVER_CERT = 1,
    MASTER_USE_GTID = $gtid_mode;
START SLAVE;
SQL
echo replica > /etc/webinfra/db-role
echo "$primary" > /etc/webinfra/db-primary
echo "webinfra-db-follow: replicating from $primary ($gtid_mode)"
