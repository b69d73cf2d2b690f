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


def test_lb_has_an_elastic_ip_and_the_url_uses_it_over_https(program):
    (eip,) = program.of_type("aws:ec2/eip:Eip")
    (association,) = program.of_type("aws:ec2/eipAssociation:EipAssociation")
    assert eip.inputs["domain"] == "vpc" and "instance" not in eip.inputs  # allocated first, for the certificate
    assert association.inputs == {"allocationId": f"{eip.name}-id", "instanceId": "lb-instance-id"}
    assert program.exports["url"] == f"https://{program.exports['lb_public_ip']}/"


def test_self_signed_certificate_names_the_lb_address_and_its_key_stays_secret(program):
    from cryptography import x509

    pem = program.exports["lb_certificate_pem"]
    certificate = x509.load_pem_x509_certificate(pem.encode())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == [program.exports["lb_public_ip"]]
    key = program.named("lb-tls-key")
    assert key.inputs["algorithm"] == "ECDSA" and key.inputs["ecdsaCurve"] == "P256"
    private_key = key.outputs["privateKeyPem"]
    assert "PRIVATE KEY" in private_key and private_key not in repr(program.exports)
    for instance in program.of_type("aws:ec2/instance:Instance"):
        assert private_key.splitlines()[1] not in decode_user_data(instance.inputs["userDataBase64"])
    (parameter,) = [p for p in program.of_type("aws:ssm/parameter:Parameter") if p.inputs["name"].endswith("/tls/lb-certificate")]
    assert parameter.inputs["type"] == "SecureString"


def test_lb_is_in_the_lb_group_with_ipv6(program):
    lb = program.named("lb-instance")
    assert lb.inputs["vpcSecurityGroupIds"] == ["net-lb-sg-id"] and lb.inputs["ipv6AddressCount"] == 1
