"""LoadBalancer under mocks: HAProxy names every web server; Elastic IP; only the LB group."""
from provisioning.render import decode_user_data


def test_lb_user_data_names_every_web_server(program):
    (lb,) = [i for i in program.of_type("aws:ec2/instance:Instance") if i.inputs["tags"]["Role"] == "lb"]
    user_data = decode_user_data(lb.inputs["userDataBase64"])
    ips = program.exports["web_private_ips"]
    for number, ip in enumerate(ips, start=1):
        assert f"server web-{number:02d} {ip}:80" in user_data, f"web-{number:02d} missing from the LB"
    assert user_data.count("    server web-") == len(ips)
    assert "balance roundrobin" in user_data and "cookie" not in user_data.lower().replace("no cookie", "")


def test_lb_has_an_elastic_ip_and_the_url_uses_it(program):
    (eip,) = program.of_type("aws:ec2/eip:Eip")
    assert eip.inputs["instance"] == "lb-instance-id" and eip.inputs["domain"] == "vpc"
    assert program.exports["url"] == f"http://{program.exports['lb_public_ip']}/"


def test_lb_is_in_the_lb_group_with_ipv6(program):
    lb = program.named("lb-instance")
    assert lb.inputs["vpcSecurityGroupIds"] == ["net-lb-sg-id"] and lb.inputs["ipv6AddressCount"] == 1
