#!/bin/bash
# webinfra: first-boot provisioning of a web server, run by cloud-init (runcmd).
# Any failing step stops here with a non-zero exit, which cloud-init reports as status: error.
set -euo pipefail
. /etc/webinfra/webinfra.env
step() { echo "webinfra-bootstrap [$(date +%T)]: $*"; }

step "host firewall (validated before it is installed)"
webinfra-install-firewall

step "Session Manager and CloudWatch agents (not fatal: see webinfra-install-agents)"
webinfra-install-agents

step "system user for the app"
getent passwd webinfra >/dev/null || adduser --system --group --no-create-home --home /nonexistent webinfra

step "secrets and the database TLS certificate from SSM Parameter Store (webinfra-config-sync, as its timer runs it)"
systemctl daemon-reload
systemctl start webinfra-config-sync.service

step "MariaDB as $WEBINFRA_ROLE"
# Restart, not just start: a server already running (started by its package, or baked into an
# image) must pick up 60-webinfra.cnf (server_id, binlog, read_only) before replication is set up.
systemctl enable mariadb
systemctl restart mariadb
/usr/local/sbin/webinfra-db-setup
# Every server: it may be the primary one day (see webinfra-db-end-dead-streams, webinfra-db-ship-binlogs).
systemctl daemon-reload
systemctl enable --now webinfra-db-end-dead-streams.service webinfra-db-ship-binlogs.service webinfra-db-backup.timer

step "app server"
systemctl daemon-reload
systemctl enable webinfra-app
systemctl restart webinfra-app

step "nginx site (validated before it is enabled)"
install -m 0644 /etc/webinfra/nginx-site.conf /etc/nginx/sites-available/webinfra
ln -sfn /etc/nginx/sites-available/webinfra /etc/nginx/sites-enabled/webinfra
default_site=$(readlink -f /etc/nginx/sites-enabled/default 2>/dev/null || true)
rm -f /etc/nginx/sites-enabled/default
if ! nginx -t; then
    rm -f /etc/nginx/sites-enabled/webinfra
    [ -n "$default_site" ] && ln -sfn "$default_site" /etc/nginx/sites-enabled/default
    step "nginx rejected the site; previous configuration restored"
    exit 1
fi
systemctl enable nginx
systemctl reload-or-restart nginx

step "health metrics to CloudWatch, every minute; runtime configuration from SSM, every 30 seconds"
systemctl daemon-reload
systemctl enable --now webinfra-metrics.timer webinfra-config-sync.timer

step "waiting for /health (bounded)"
for _ in $(seq 1 60); do
    if curl -fsS --max-time 3 http://127.0.0.1/health; then
        echo
        step "healthy"
        exit 0
    fi
    sleep 1
done
step "/health did not answer 200 within 60 attempts"
exit 1
