"""DatabaseTls under mocks: a per-stack CA, one certificate per web server naming its private address
and signed by that CA; keys only in SSM SecureStrings, the public CA in the web servers' user-data."""

import datetime

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.mock_tls import SECRET_SIGNATURE, unwrap
from provisioning.render import decode_user_data


def web_hosts(run) -> list[tuple[str, str]]:
    return [(f"web-{n:02d}", ip) for n, ip in enumerate(run.exports["web_private_ips"], start=1)]


def certificate(run, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(run.named(name).outputs["certPem"].encode())


def test_database_tls_certificates_name_each_server_and_chain_to_the_stack_ca(program):
    ca = x509.load_pem_x509_certificate(program.named("db-tls-ca").outputs["certPem"].encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    for number, address in enumerate(program.exports["web_private_ips"], start=1):
        host = f"web-{number:02d}"
        cert = x509.load_pem_x509_certificate(program.named(f"db-tls-{host}-cert").outputs["certPem"].encode())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == [address]
        key = program.named(f"db-tls-{host}-key").outputs["privateKeyPem"].splitlines()[1]
        instance = program.named(f"web-{number:02d}-instance")
        user_data = decode_user_data(instance.inputs["userDataBase64"])
        assert key not in user_data, f"{host}'s database key is in its user-data"
        files = {f["path"]: f["content"] for f in yaml.safe_load(user_data)["write_files"]}
        assert (
            files["/etc/mysql/webinfra-tls/ca.pem"] == program.named("db-tls-ca").outputs["certPem"]
        )  # the public CA is


def test_one_certificate_per_web_server_and_one_ca_per_stack(program):
    hosts = [host for host, _ in web_hosts(program)]
    signed = sorted(c.name for c in program.of_type("tls:index/locallySignedCert:LocallySignedCert"))
    assert signed == sorted(f"db-tls-{host}-cert" for host in hosts)
    (ca,) = [c for c in program.of_type("tls:index/selfSignedCert:SelfSignedCert") if c.name.startswith("db-tls")]
    assert ca.inputs["subject"]["commonName"] == "webinfra dev database CA"
    # each server and the CA have their own key: no key is shared between hosts
    keys = {
        k.outputs["privateKeyPem"]
        for k in program.of_type("tls:index/privateKey:PrivateKey")
        if k.name.startswith("db-tls-")
    }
    assert len(keys) == len(hosts) + 1


def test_the_ca_only_signs_and_the_servers_certificates_serve_and_authenticate_clients(program):
    ca = certificate(program, "db-tls-ca")
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    for host, address in web_hosts(program):
        cert = certificate(program, f"db-tls-{host}-cert")
        assert cert.issuer == ca.subject
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == host
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        # MariaDB's server side, and the replica and app verifying it, use the one certificate
        assert set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
        }
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [host]
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert lifetime == datetime.timedelta(days=825), host
        request = program.named(f"db-tls-{host}-csr").inputs
        assert request["ipAddresses"] == [address]
        declared = program.named(f"db-tls-{host}-cert").inputs
        assert (declared["validityPeriodHours"], declared["earlyRenewalHours"]) == (825 * 24, 60 * 24)


def test_server_keys_reach_the_hosts_only_through_secure_strings(program):
    parameters = {p.inputs["name"]: p for p in program.of_type("aws:ssm/parameter:Parameter")}
    exports = repr(program.exports)
    user_data = [decode_user_data(i.inputs["userDataBase64"]) for i in program.of_type("aws:ec2/instance:Instance")]
    for host, _ in web_hosts(program):
        key = program.named(f"db-tls-{host}-key").outputs["privateKeyPem"]
        cert = program.named(f"db-tls-{host}-cert").outputs["certPem"]
        parameter = parameters[f"/webinfra/dev/tls/{host}"]
        assert parameter.inputs["type"] == "SecureString"
        assert SECRET_SIGNATURE in parameter.inputs["value"], f"{host}'s key is not a secret in the state"
        assert unwrap(parameter.inputs["value"]) == cert + key  # the certificate, then its key
        body = key.splitlines()[1]
        assert body not in exports, f"{host}'s database key is exported"
        assert not [text for text in user_data if body in text], f"{host}'s database key is in user-data"


def test_every_host_trusts_the_stack_ca(program):
    """Web servers verify each other with it; load balancers, the databases (the failover controller)."""
    ca = program.named("db-tls-ca").outputs["certPem"]
    for instance in program.of_type("aws:ec2/instance:Instance"):
        files = {
            f["path"]: f["content"]
            for f in yaml.safe_load(decode_user_data(instance.inputs["userDataBase64"]))["write_files"]
        }
        assert files["/etc/mysql/webinfra-tls/ca.pem"] == ca, instance
