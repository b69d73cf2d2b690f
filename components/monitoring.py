"""Monitoring: an alarm topic, alarms with recovery actions for every instance, and a dashboard.

Per instance: a failed system status check recovers the instance onto other hardware, a failed
instance status check reboots it, and high CPU, memory or disk, or a role process gone (CloudWatch
agent, namespace CWAgent) notifies. Per stack: fewer healthy HAProxy backends than web servers, and
replication stopped or lagging on any replica (metrics the hosts publish to webinfra/<stack>), and the
backups: the newest full backup too old, binary-log shipping behind, a backup run that failed.
Every alarm notifies the SNS topic; `alertEmail` subscribes an address to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from provisioning import defaults
from provisioning.render import role_processes
from settings import DbRole, HostKind


@dataclass
class MonitoredHost:
    hostname: str
    kind: HostKind
    db_role: DbRole | None  # a web server's; None for a load balancer
    instance_id: pulumi.Input[str]
    processes: list[str] | None = None  # that must run on it; None: its kind's (render.role_processes)

    def watched_processes(self) -> list[str]:
        return self.processes if self.processes is not None else role_processes(self.kind)


# The bound: binary logs more than 5 minutes from S3 alarm (they ship every 30 s).
BINLOG_BEHIND_ALARM_SECONDS = 300


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch alarm: `metric` in `namespace` for `dimensions`, compared (`comparison`, a
    CloudWatch ComparisonOperator) with `threshold` over `periods` periods of `period` seconds.
    `missing`: how missing data counts (CloudWatch's TreatMissingData: a host that stops reporting a
    metric it must report is `breaching`). `extra_actions`: besides notifying the topic (recover,
    reboot)."""

    key: str  # the alarm's name within the stack: webinfra-<stack>-<key>
    metric: str
    namespace: str
    dimensions: Mapping[str, pulumi.Input[str]]
    comparison: str
    threshold: float
    description: str
    statistic: str = "Maximum"
    period: int = 60
    periods: int = 1
    missing: str = "missing"
    extra_actions: tuple[str, ...] = ()


@dataclass
class MonitoringArgs:
    stack: str
    region: str
    hosts: list[MonitoredHost]
    web_count: int
    max_replication_lag_seconds: int
    tags: dict[str, str]
    alert_email: str | None = None
    cpu_percent: int = 80
    memory_percent: int = 90
    disk_percent: int = 85


def alert_key_policy() -> pulumi.Output[str]:
    """The alarm topic's key: the account administers it (IAM policies decide who may), and CloudWatch
    alarms may use it to publish (SNS's "compatibility between event sources from AWS services and
    encrypted topics": kms:Decrypt and kms:GenerateDataKey*)."""
    identity = aws.get_caller_identity_output()
    partition = aws.get_partition_output().partition

    def document(account: str, partition: str) -> str:
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "AccountAdministersTheKey",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:{partition}:iam::{account}:root"},
                        "Action": "kms:*",
                        "Resource": "*",
                    },
                    {
                        # As SNS documents it for CloudWatch, without conditions: whether CloudWatch's KMS
                        # requests carry aws:SourceArn/aws:SourceAccount is not documented, and a condition
                        # they fail would drop every alarm silently. The key encrypts this topic only, and
                        # the topic's own policy admits publishers of this account only.
                        "Sid": "CloudWatchAlarmsPublishToTheEncryptedTopic",
                        "Effect": "Allow",
                        "Principal": {"Service": "cloudwatch.amazonaws.com"},
                        "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                        "Resource": "*",
                    },
                ],
            }
        )

    return pulumi.Output.all(identity.account_id, partition).apply(lambda values: document(*values))


class Monitoring(pulumi.ComponentResource):
    topic_arn: pulumi.Output[str]
    dashboard_name: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:monitoring:Monitoring", name, None, opts)
        self._name, self._args = name, args
        child = pulumi.ResourceOptions(parent=self)
        self.namespace = f"webinfra/{args.stack}"
        key = aws.kms.Key(
            f"{name}-alerts-key",
            description=f"webinfra {args.stack}: encrypts the alarm topic; CloudWatch alarms may use it to publish",
            enable_key_rotation=True,
            deletion_window_in_days=7,  # stacks are torn down after a lab; a week to undo a mistake
            policy=alert_key_policy(),
            tags={**args.tags, "Role": "monitoring", "Name": f"{name}-alerts-key"},
            opts=child,
        )
        alias = (
            "alias/webinfra-" + re.sub(r"[^A-Za-z0-9/_-]", "-", args.stack) + "-alerts"
        )  # a stack name may hold dots
        aws.kms.Alias(f"{name}-alerts-key-alias", name=alias, target_key_id=key.key_id, opts=child)
        topic = aws.sns.Topic(
            f"{name}-alerts",
            # A customer-managed key: CloudWatch alarms cannot publish to a topic under the AWS-managed
            # alias/aws/sns key (its policy cannot be changed to let cloudwatch.amazonaws.com use it).
            kms_master_key_id=key.arn,
            tags={**args.tags, "Role": "monitoring", "Name": f"{name}-alerts"},
            opts=child,
        )
        self.topic_arn = topic.arn
        if args.alert_email:
            aws.sns.TopicSubscription(
                f"{name}-alerts-email", topic=topic.arn, protocol="email", endpoint=args.alert_email, opts=child
            )

        for host in args.hosts:
            self._instance_alarms(host)
        lbs = [h for h in args.hosts if h.kind == HostKind.LB]
        for lb in lbs:
            # Each load balancer of a pair checks the backends itself: the standby must be ready too.
            self._alarm(
                AlarmSpec(
                    key="lb-backends" if len(lbs) == 1 else f"{lb.hostname}-backends",
                    metric="HealthyBackends",
                    namespace=self.namespace,
                    dimensions={"Host": lb.hostname},
                    comparison="LessThanThreshold",
                    threshold=args.web_count,
                    description=f"{lb.hostname}: fewer than all {args.web_count} web servers in HAProxy's rotation",
                    statistic="Minimum",
                    periods=2,
                    missing="breaching",
                )
            )
        primary = next(h for h in args.hosts if h.db_role == DbRole.PRIMARY)
        self._alarm(
            AlarmSpec(
                key="semi-sync-off",
                metric="SemiSyncOn",
                namespace=self.namespace,
                dimensions={"Host": primary.hostname},
                comparison="LessThanThreshold",
                threshold=1,
                description=f"{primary.hostname}: semi-synchronous replication fell back to asynchronous: "
                "a crash now could lose acknowledged writes",
                statistic="Minimum",
                periods=2,
            )
        )
        self._failover_alarms([h.hostname for h in args.hosts if h.kind == HostKind.WEB])
        self._backup_alarms()
        for host in args.hosts:
            if host.db_role == DbRole.REPLICA:
                self._alarm(
                    AlarmSpec(
                        key=f"{host.hostname}-replication-stopped",
                        metric="ReplicationRunning",
                        namespace=self.namespace,
                        dimensions={"Host": host.hostname},
                        comparison="LessThanThreshold",
                        threshold=1,
                        description=f"{host.hostname}: replication stopped",
                        statistic="Minimum",
                        periods=2,
                        missing="breaching",
                    )
                )
                self._alarm(
                    AlarmSpec(
                        key=f"{host.hostname}-replication-lag",
                        metric="ReplicationLagSeconds",
                        namespace=self.namespace,
                        dimensions={"Host": host.hostname},
                        comparison="GreaterThanThreshold",
                        threshold=args.max_replication_lag_seconds,
                        description=f"{host.hostname}: replication more than "
                        f"{args.max_replication_lag_seconds} s behind",
                        statistic="Maximum",
                        periods=3,
                    )
                )
        dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=f"webinfra-{args.stack}",
            dashboard_body=pulumi.Output.all(*[h.instance_id for h in args.hosts]).apply(self._dashboard_body),
            opts=child,
        )
        self.dashboard_name = dashboard.dashboard_name
        self.register_outputs({"topic_arn": self.topic_arn, "dashboard_name": self.dashboard_name})

    def _instance_alarms(self, host: MonitoredHost) -> None:
        automate = f"arn:aws:automate:{self._args.region}:ec2"
        instance = {"InstanceId": host.instance_id}
        self._alarm(
            AlarmSpec(
                key=f"{host.hostname}-system-check",
                metric="StatusCheckFailed_System",
                namespace="AWS/EC2",
                dimensions=instance,
                comparison="GreaterThanOrEqualToThreshold",
                threshold=1,
                description=f"{host.hostname}: system status check failed: recovering the instance",
                periods=2,
                extra_actions=(f"{automate}:recover",),
            )
        )
        self._alarm(
            AlarmSpec(
                key=f"{host.hostname}-instance-check",
                metric="StatusCheckFailed_Instance",
                namespace="AWS/EC2",
                dimensions=instance,
                comparison="GreaterThanOrEqualToThreshold",
                threshold=1,
                description=f"{host.hostname}: instance status check failed: rebooting",
                periods=3,
                extra_actions=(f"{automate}:reboot",),
            )
        )
        self._alarm(
            AlarmSpec(
                key=f"{host.hostname}-cpu-high",
                metric="CPUUtilization",
                namespace="AWS/EC2",
                dimensions=instance,
                comparison="GreaterThanThreshold",
                threshold=self._args.cpu_percent,
                description=f"{host.hostname}: CPU above {self._args.cpu_percent} % for 15 minutes",
                statistic="Average",
                period=300,
                periods=3,
            )
        )
        self._alarm(
            AlarmSpec(
                key=f"{host.hostname}-memory-high",
                metric="mem_used_percent",
                namespace="CWAgent",
                dimensions=instance,
                comparison="GreaterThanThreshold",
                threshold=self._args.memory_percent,
                description=f"{host.hostname}: memory above {self._args.memory_percent} %",
                statistic="Average",
                period=300,
                periods=2,
            )
        )
        self._alarm(
            AlarmSpec(
                key=f"{host.hostname}-disk-high",
                metric="disk_used_percent",
                namespace="CWAgent",
                dimensions={**instance, "path": "/"},
                comparison="GreaterThanThreshold",
                threshold=self._args.disk_percent,
                description=f"{host.hostname}: root disk above {self._args.disk_percent} %",
                statistic="Maximum",
                period=300,
                periods=1,
            )
        )
        for exe in host.watched_processes():
            self._alarm(
                AlarmSpec(
                    key=f"{host.hostname}-{exe}-down",
                    metric="procstat_lookup_pid_count",
                    namespace="CWAgent",
                    dimensions={**instance, "exe": exe},
                    comparison="LessThanThreshold",
                    threshold=1,
                    description=f"{host.hostname}: no {exe} process",
                    statistic="Minimum",
                    periods=2,
                    missing="breaching",
                )
            )

    def _failover_alarms(self, web_hosts: list[str]) -> None:
        """What the failover controller (failover/webinfra_failover.py) reports, as alarms."""
        for host in web_hosts:
            self._alarm(
                AlarmSpec(
                    key=f"{host}-became-primary",
                    metric="BecamePrimary",
                    namespace=self.namespace,
                    dimensions={"Host": host},
                    comparison="GreaterThanOrEqualToThreshold",
                    threshold=1,
                    description=f"{host} is the database primary now: automatic failover (the previous primary "
                    "stopped answering; the controller's log on the active load balancer says why)",
                    missing="notBreaching",
                )
            )
        self._alarm(
            AlarmSpec(
                key="failover-disarmed",
                metric="FailoverArmed",
                namespace=self.namespace,
                dimensions={},
                comparison="LessThanThreshold",
                threshold=1,
                description="Automatic database failover is disarmed (no replica acknowledges the primary's "
                "writes) or no load balancer runs its controller: a primary's failure now needs scripts/promote",
                statistic="Minimum",
                periods=2,
                missing="breaching",
            )
        )
        self._alarm(
            AlarmSpec(
                key="database-attention",
                metric="DatabaseAttention",
                namespace=self.namespace,
                dimensions={},
                comparison="GreaterThanOrEqualToThreshold",
                threshold=1,
                description="The database failover controller needs a person: a failover it refused (it could "
                "lose writes), a server holding writes no one else has, or a second writable server it fenced "
                "(journalctl -u webinfra-failover on the active load balancer)",
                missing="notBreaching",
            )
        )

    def _backup_alarms(self) -> None:
        """What webinfra-db-ship-binlogs (on the primary, whichever server it is) and webinfra-db-backup
        report, with no host dimension: the stack's backups, not one server's."""
        too_old = defaults.SERVER_DEFAULTS.mariadb.backup_alarm_after_hours
        self._alarm(
            AlarmSpec(
                key="full-backup-too-old",
                metric="FullBackupAgeSeconds",
                namespace=self.namespace,
                dimensions={},
                comparison="GreaterThanThreshold",
                threshold=too_old * 3600,
                description=f"The newest full database backup in S3 is more than {too_old} hours old (daily "
                "backups from a replica failed or found no replica that replicates: journalctl -u "
                "webinfra-db-backup on the replicas)",
                periods=2,
            )
        )
        self._alarm(
            AlarmSpec(
                key="binlog-shipping-behind",
                metric="BinlogShippingBehindSeconds",
                namespace=self.namespace,
                dimensions={},
                comparison="GreaterThanThreshold",
                threshold=BINLOG_BEHIND_ALARM_SECONDS,
                description="The primary's binary logs have not reached S3 for more than "
                f"{BINLOG_BEHIND_ALARM_SECONDS // 60} minutes (or no primary reports): losing every server now "
                "would lose that much. journalctl -u webinfra-db-ship-binlogs on the primary",
                periods=2,
                # No primary publishing (its shipper stopped, or no writable server) is no shipping.
                missing="breaching",
            )
        )
        self._alarm(
            AlarmSpec(
                key="backup-failed",
                metric="BackupRunFailed",
                namespace=self.namespace,
                dimensions={},
                comparison="GreaterThanOrEqualToThreshold",
                threshold=1,
                description="A full database backup run failed (journalctl -u webinfra-db-backup on the "
                "replica it names in its log); the next replica's turn may still take one",
                period=300,
                missing="notBreaching",
            )
        )

    def _alarm(self, spec: AlarmSpec) -> None:
        """One alarm named webinfra-<stack>-<key>, notifying the topic when it fires and when it clears."""
        name = f"{self._name}-{spec.key}"
        aws.cloudwatch.MetricAlarm(
            name,
            name=f"webinfra-{self._args.stack}-{spec.key}",
            alarm_description=spec.description,
            namespace=spec.namespace,
            metric_name=spec.metric,
            dimensions=spec.dimensions,
            statistic=spec.statistic,
            period=spec.period,
            evaluation_periods=spec.periods,
            comparison_operator=spec.comparison,
            threshold=spec.threshold,
            treat_missing_data=spec.missing,
            alarm_actions=[*spec.extra_actions, self.topic_arn],
            ok_actions=[self.topic_arn],
            tags={**self._args.tags, "Role": "monitoring", "Name": name},
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _dashboard_body(self, instance_ids: list[str]) -> str:
        args = self._args
        by_host = dict(zip([h.hostname for h in args.hosts], instance_ids, strict=True))

        def widget(title, metrics, x, y):
            return {
                "type": "metric",
                "x": x,
                "y": y,
                "width": 12,
                "height": 6,
                "properties": {
                    "title": title,
                    "region": args.region,
                    "stat": "Average",
                    "period": 60,
                    "metrics": metrics,
                },
            }

        lbs = [h.hostname for h in args.hosts if h.kind == HostKind.LB]
        replicas = [h.hostname for h in args.hosts if h.db_role == DbRole.REPLICA]
        widgets = [
            widget(
                "CPU %",
                [["AWS/EC2", "CPUUtilization", "InstanceId", i, {"label": h}] for h, i in by_host.items()],
                0,
                0,
            ),
            widget("Web servers in rotation", [[self.namespace, "HealthyBackends", "Host", lb] for lb in lbs], 12, 0),
            widget(
                "Replication lag (s)", [[self.namespace, "ReplicationLagSeconds", "Host", h] for h in replicas], 0, 6
            ),
            widget(
                "Memory %",
                [["CWAgent", "mem_used_percent", "InstanceId", i, {"label": h}] for h, i in by_host.items()],
                12,
                6,
            ),
        ]
        return json.dumps({"widgets": widgets})
