"""What pulumi-tls computes, computed for real under mocks (with `cryptography`).

The lab boots hosts with the certificates the program declares, so the mocks must return working
keys and certificates, not placeholders: the same inputs give a certificate that behaves as the
one the provider would make.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"  # how the Pulumi engine marks a secret value


def unwrap(value: Any) -> Any:
    if isinstance(value, dict) and SECRET_SIGNATURE in value:
        return value["value"]
    return value


def private_key(inputs: dict) -> dict:
    if inputs.get("algorithm") == "ECDSA":
        curves = {"P224": ec.SECP224R1(), "P256": ec.SECP256R1(), "P384": ec.SECP384R1(), "P521": ec.SECP521R1()}
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = ec.generate_private_key(
            curves[inputs.get("ecdsaCurve", "P224")]
        )
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(inputs.get("rsaBits", 2048)))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {"privateKeyPem": pem, "publicKeyPem": public}


def _name(subject: dict | None) -> x509.Name:
    fields = {"commonName": NameOID.COMMON_NAME, "organization": NameOID.ORGANIZATION_NAME}
    return x509.Name(
        [x509.NameAttribute(oid, (subject or {})[key]) for key, oid in fields.items() if (subject or {}).get(key)]
    )


def _build(inputs: dict, subject: x509.Name, public_key, issuer: x509.Name, signer) -> str:
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    uses = set(inputs.get("allowedUses") or [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=int(inputs["validityPeriodHours"])))
    )
    is_ca = bool(inputs.get("isCaCertificate"))
    builder = builder.add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature="digital_signature" in uses,
            content_commitment=False,
            key_encipherment="key_encipherment" in uses,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign="cert_signing" in uses,
            crl_sign="crl_signing" in uses,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    extended = [
        oid
        for use, oid in (
            ("server_auth", ExtendedKeyUsageOID.SERVER_AUTH),
            ("client_auth", ExtendedKeyUsageOID.CLIENT_AUTH),
        )
        if use in uses
    ]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    names = [x509.DNSName(n) for n in inputs.get("dnsNames") or []] + [
        x509.IPAddress(ipaddress.ip_address(a)) for a in inputs.get("ipAddresses") or []
    ]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def _load_key(pem: Any):
    return serialization.load_pem_private_key(unwrap(pem).encode(), password=None)


def self_signed_cert(inputs: dict) -> dict:
    key = _load_key(inputs["privateKeyPem"])
    name = _name(inputs.get("subject"))
    return {"certPem": _build(inputs, name, key.public_key(), name, key)}


def cert_request(inputs: dict) -> dict:
    key = _load_key(inputs["privateKeyPem"])
    request = x509.CertificateSigningRequestBuilder().subject_name(_name(inputs.get("subject")))
    names = [x509.DNSName(n) for n in inputs.get("dnsNames") or []] + [
        x509.IPAddress(ipaddress.ip_address(a)) for a in inputs.get("ipAddresses") or []
    ]
    if names:
        request = request.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return {"certRequestPem": request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()}


def locally_signed_cert(inputs: dict) -> dict:
    request = x509.load_pem_x509_csr(unwrap(inputs["certRequestPem"]).encode())
    ca_cert = x509.load_pem_x509_certificate(unwrap(inputs["caCertPem"]).encode())
    ca_key = _load_key(inputs["caPrivateKeyPem"])
    try:
        sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = sans.get_values_for_type(x509.DNSName)
        ips = [str(a) for a in sans.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    return {
        "certPem": _build(
            {**inputs, "dnsNames": dns, "ipAddresses": ips},
            request.subject,
            request.public_key(),
            ca_cert.subject,
            ca_key,
        )
    }


def lab_listener(
    common_name: str, *, dns_names: tuple[str, ...] = (), ip_addresses: tuple[str, ...] = (), hours: int = 48
) -> tuple[str, str, str]:
    """For the lab's own TLS listeners (stand-ins for public services): a throwaway CA and a server
    certificate it signed. Returns (ca_pem, cert_pem, key_pem); the hosts that call the listener
    trust the CA."""
    ca_key = private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    ca = self_signed_cert(
        {
            "privateKeyPem": ca_key,
            "subject": {"commonName": f"{common_name} CA"},
            "validityPeriodHours": hours,
            "isCaCertificate": True,
            "allowedUses": ["cert_signing"],
        }
    )["certPem"]
    key = private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    request = cert_request(
        {
            "privateKeyPem": key,
            "subject": {"commonName": common_name},
            "dnsNames": list(dns_names),
            "ipAddresses": list(ip_addresses),
        }
    )
    cert = locally_signed_cert(
        {
            **request,
            "caCertPem": ca,
            "caPrivateKeyPem": ca_key,
            "validityPeriodHours": hours,
            "allowedUses": ["server_auth", "digital_signature"],
        }
    )["certPem"]
    return ca, cert, key


COMPUTE = {
    "tls:index/privateKey:PrivateKey": private_key,
    "tls:index/selfSignedCert:SelfSignedCert": self_signed_cert,
    "tls:index/certRequest:CertRequest": cert_request,
    "tls:index/locallySignedCert:LocallySignedCert": locally_signed_cert,
}
