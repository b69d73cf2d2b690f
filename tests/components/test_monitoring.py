"""Monitoring under mocks: alarms and recovery actions per instance, stack alarms, the topic (the hosts'
right to publish metrics: test_host_role.py)."""

import json

from lab.mock_cloud import run_program

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def alarms(run) -> dict[str, dict]:
    return {a.inputs["name"]: a.inputs for a in run.of_type(ALARM)}


def test_every_instance_has_status_check_recovery_and_resource_alarms(program):
    found = alarms(program)
    topic = program.exports["alarm_topic_arn"]
    for instance in program.of_type("aws:ec2/instance:Instance"):
        host, instance_id = instance.inputs["tags"]["Name"], f"{instance.name}-id"
        system = found[f"webinfra-dev-{host}-system-check"]
        assert system["metricName"] == "StatusCheckFailed_System" and system["dimensions"] == {
            "InstanceId": instance_id
        }
        assert system["alarmActions"] == ["arn:aws:automate:eu-west-1:ec2:recover", topic]
        assert found[f"webinfra-dev-{host}-instance-check"]["alarmActions"] == [
            "arn:aws:automate:eu-west-1:ec2:reboot",
            topic,
        ]
        for key, metric in (
            ("cpu-high", "CPUUtilization"),
            ("memory-high", "mem_used_percent"),
            ("disk-high", "disk_used_percent"),
        ):
            alarm = found[f"webinfra-dev-{host}-{key}"]
            assert alarm["metricName"] == metric and alarm["alarmActions"] == [topic], alarm
        processes = ["haproxy"] if host.startswith("lb") else ["nginx", "gunicorn", "mariadbd"]
        for exe in processes:
            alarm = found[f"webinfra-dev-{host}-{exe}-down"]
            assert alarm["namespace"] == "CWAgent" and alarm["dimensions"] == {"InstanceId": instance_id, "exe": exe}
            assert alarm["treatMissingData"] == "breaching"


def test_stack_alarms_watch_backends_and_replication(program):
    found = alarms(program)
    count = len(program.exports["web_private_ips"])
    backends = found["webinfra-dev-lb-backends"]
    assert (backends["namespace"], backends["metricName"], backends["threshold"]) == (
        "webinfra/dev",
        "HealthyBackends",
        count,
    )
    assert backends["comparisonOperator"] == "LessThanThreshold" and backends["treatMissingData"] == "breaching"
    for number in range(2, count + 1):
        host = f"web-{number:02d}"
        assert found[f"webinfra-dev-{host}-replication-stopped"]["dimensions"] == {"Host": host}
        assert found[f"webinfra-dev-{host}-replication-lag"]["threshold"] == 30
    assert "webinfra-dev-web-01-replication-stopped" not in found  # the primary replicates from nobody


def test_topic_is_encrypted_and_email_subscribed_only_when_given(program):
    (topic,) = program.of_type("aws:sns/topic:Topic")
    assert topic.inputs["kmsMasterKeyId"].startswith("arn:aws:kms:")  # the stack's own key (see below)
    assert program.of_type("aws:sns/topicSubscription:TopicSubscription") == []
    run = run_program({"alertEmail": "ops@example.com"})
    (subscription,) = run.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert (subscription.inputs["protocol"], subscription.inputs["endpoint"]) == ("email", "ops@example.com")


def test_dashboard_shows_every_instance(program):
    (dashboard,) = program.of_type("aws:cloudwatch/dashboard:Dashboard")
    body = json.loads(dashboard.inputs["dashboardBody"])
    cpu = next(w for w in body["widgets"] if w["properties"]["title"] == "CPU %")
    assert len(cpu["properties"]["metrics"]) == len(program.of_type("aws:ec2/instance:Instance"))


def test_stats_port_is_open_to_the_admin_network_only_when_set():
    run = run_program({"adminCidr": "203.0.113.0/28"})
    rules = [
        r
        for r in run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs["fromPort"] == 8404
    ]
    assert [(r.inputs["securityGroupId"], r.inputs["cidrIpv4"]) for r in rules] == [("net-lb-sg-id", "203.0.113.0/28")]


def test_semi_sync_falling_back_to_asynchronous_alarms(program):
    alarm = alarms(program)["webinfra-dev-semi-sync-off"]
    assert (alarm["namespace"], alarm["metricName"], alarm["dimensions"]) == (
        "webinfra/dev",
        "SemiSyncOn",
        {"Host": "web-01"},
    )
    assert alarm["comparisonOperator"] == "LessThanThreshold" and alarm["threshold"] == 1


def test_the_alarm_topic_uses_a_customer_managed_key_that_cloudwatch_may_use(program):
    (topic,) = program.of_type("aws:sns/topic:Topic")
    (key,) = program.of_type("aws:kms/key:Key")
    # not the AWS-managed alias/aws/sns, whose policy cannot let CloudWatch alarms publish
    assert topic.inputs["kmsMasterKeyId"] == key.outputs["arn"] and "alias/aws/" not in topic.inputs["kmsMasterKeyId"]
    assert key.inputs["enableKeyRotation"] is True
    statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
    admin = statements["AccountAdministersTheKey"]
    assert admin["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"} and admin["Action"] == "kms:*"
    cloudwatch = statements["CloudWatchAlarmsPublishToTheEncryptedTopic"]
    assert cloudwatch["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert sorted(cloudwatch["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    # as SNS documents it: a condition CloudWatch's requests might not meet would drop every alarm silently
    assert "Condition" not in cloudwatch
    assert len(statements) == 2, "nothing else may use the key"
    # the topic's policy is the default one (this account's publishers only): none is declared
    assert program.of_type("aws:sns/topicPolicy:TopicPolicy") == []
    (alias,) = program.of_type("aws:kms/alias:Alias")
    assert alias.inputs["name"] == "alias/webinfra-dev-alerts" and alias.inputs["targetKeyId"] == key.outputs["keyId"]


def test_the_key_alias_is_valid_for_any_stack_name():
    from lab.mock_cloud import run_program

    (alias,) = run_program({}, stack="team.dev").of_type("aws:kms/alias:Alias")
    assert alias.inputs["name"] == "alias/webinfra-team-dev-alerts"


def test_the_failover_controllers_reports_are_alarms_naming_the_new_primary(program):
    """The names and dimensions the controller publishes (failover/webinfra_failover.py) have alarms."""
    import inspect

    from failover import webinfra_failover

    found = alarms(program)
    topic = program.exports["alarm_topic_arn"]
    source = inspect.getsource(webinfra_failover)
    for n in range(1, len(program.exports["web_private_ips"]) + 1):
        promoted = found[f"webinfra-dev-web-{n:02d}-became-primary"]
        assert (promoted["metricName"], promoted["dimensions"]) == ("BecamePrimary", {"Host": f"web-{n:02d}"})
        assert f"web-{n:02d} is the database primary now" in promoted["alarmDescription"]
        assert promoted["alarmActions"] == [topic] and promoted["treatMissingData"] == "notBreaching"
    disarmed = found["webinfra-dev-failover-disarmed"]
    assert (disarmed["metricName"], disarmed["comparisonOperator"], disarmed["threshold"]) == (
        "FailoverArmed",
        "LessThanThreshold",
        1,
    )
    assert disarmed["treatMissingData"] == "breaching"  # no active controller publishing: no failover either
    assert found["webinfra-dev-database-attention"]["metricName"] == "DatabaseAttention"
    for metric in ("BecamePrimary", "FailoverArmed", "DatabaseAttention"):
        assert f'"{metric}"' in source, metric
    assert all(a["namespace"] == "webinfra/dev" for k, a in found.items() if "primary" in k or "failover" in k)


def test_the_backups_have_alarms_on_what_the_backup_programs_publish(program):
    """Full backup too old, binary-log shipping more than 5 minutes behind, a failed backup run: stack-wide
    (no host: the primary, whichever server it is, publishes the first two; the replica that fails, the
    third), on the names the shipped programs publish (tests/backups, tests/provisioning run them)."""
    from provisioning import defaults, render

    found = alarms(program)
    topic = program.exports["alarm_topic_arn"]
    too_old = found["webinfra-dev-full-backup-too-old"]
    behind = found["webinfra-dev-binlog-shipping-behind"]
    failed = found["webinfra-dev-backup-failed"]
    assert too_old["threshold"] == defaults.SERVER_DEFAULTS.mariadb.backup_alarm_after_hours * 3600
    assert (behind["threshold"], behind["comparisonOperator"]) == (300, "GreaterThanThreshold")
    assert behind["treatMissingData"] == "breaching"  # no primary publishing: nothing ships either
    assert (failed["comparisonOperator"], failed["threshold"], failed["treatMissingData"]) == (
        "GreaterThanOrEqualToThreshold",
        1,
        "notBreaching",
    )
    publishers = {
        "FullBackupAgeSeconds": "webinfra-db-ship-binlogs",
        "BinlogShippingBehindSeconds": "webinfra-db-ship-binlogs",
        "BackupRunFailed": "webinfra-db-backup",
    }
    for alarm in (too_old, behind, failed):
        assert alarm["namespace"] == "webinfra/dev" and alarm["dimensions"] == {}, alarm
        assert alarm["alarmActions"] == [topic] and alarm["okActions"] == [topic]
        shipped = render.shipped_program(render.HOST_PROGRAMS[publishers[alarm["metricName"]]][0])
        assert alarm["metricName"] in shipped, alarm["metricName"]
