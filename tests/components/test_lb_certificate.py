"""LoadBalancerCertificate under mocks: a self-signed ECDSA certificate for the LB's public address
(and the domain, when set), renewed early by a later `pulumi up`; its key only in a SecureString."""

import datetime

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.mock_cloud import run_program
from lab.mock_tls import SECRET_SIGNATURE, unwrap
from provisioning.render import decode_user_data


@pytest.fixture(scope="module")
def with_domain():
    return run_program({"domain": "www.example.com"})


def names_of(certificate: x509.Certificate) -> tuple[list[str], list[str]]:
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.DNSName), [str(a) for a in names.get_values_for_type(x509.IPAddress)]


def test_self_signed_certificate_names_the_lb_address_and_its_key_stays_secret(program):
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
    (parameter,) = [
        p for p in program.of_type("aws:ssm/parameter:Parameter") if p.inputs["name"].endswith("/tls/lb-certificate")
    ]
    assert parameter.inputs["type"] == "SecureString"


def test_validity_and_early_renewal_are_as_declared(program):
    declared = program.named("lb-tls-cert").inputs
    # a year's certificate; a `pulumi up` in its last 30 days makes a new one
    assert (declared["validityPeriodHours"], declared["earlyRenewalHours"]) == (365 * 24, 30 * 24)
    certificate = x509.load_pem_x509_certificate(program.exports["lb_certificate_pem"].encode())
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == datetime.timedelta(days=365)


def test_the_certificate_is_a_self_signed_server_certificate_named_after_the_stack(program):
    certificate = x509.load_pem_x509_certificate(program.exports["lb_certificate_pem"].encode())
    assert program.exports["lb_certificate_pem"] == program.named("lb-tls-cert").outputs["certPem"]
    certificate.verify_directly_issued_by(certificate)  # clients trust it as it is (`curl --cacert`)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "webinfra dev"
    assert list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert names_of(certificate) == ([], [program.exports["lb_public_ip"]])  # no domain: no DNS name


def test_with_a_domain_the_certificate_names_the_domain_too(with_domain):
    certificate = x509.load_pem_x509_certificate(with_domain.exports["lb_certificate_pem"].encode())
    assert names_of(certificate) == (["www.example.com"], [with_domain.exports["lb_public_ip"]])
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "www.example.com"


def test_haproxy_reads_certificate_and_key_from_a_secure_string_only(program):
    parameters = {p.inputs["name"]: p for p in program.of_type("aws:ssm/parameter:Parameter")}
    parameter = parameters["/webinfra/dev/tls/lb-certificate"]
    assert parameter.inputs["type"] == "SecureString"
    assert SECRET_SIGNATURE in parameter.inputs["value"], "the LB's key is not a secret in the state"
    # one file, as HAProxy reads it: the certificate, then its key
    key = program.named("lb-tls-key").outputs["privateKeyPem"]
    assert unwrap(parameter.inputs["value"]) == program.exports["lb_certificate_pem"] + key
