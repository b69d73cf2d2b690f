"""DatabaseTls: a per-stack CA and one certificate per web server, for MariaDB over TLS.

Replication and the app's writes to the primary cross the network: both verify the primary's
certificate against this CA (the certificate names the server's fixed private address). Keys are
secrets in the Pulumi state and reach each host through SSM Parameter Store; the CA certificate is
public and travels in user-data.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

from settings import HostSlot


@dataclass
class DatabaseTlsArgs:
    stack: str
    servers: list[HostSlot]
    validity_days: int = 825


class DatabaseTls(pulumi.ComponentResource):
    ca_certificate_pem: pulumi.Output[str]
    server_pems: dict[str, pulumi.Output[str]]  # hostname → certificate and key (secret)

    def __init__(self, name: str, args: DatabaseTlsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:db_tls:DatabaseTls", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgsDict(
                common_name=f"webinfra {args.stack} database CA", organization="webinfra"
            ),
            is_ca_certificate=True,
            validity_period_hours=10 * 365 * 24,
            allowed_uses=["cert_signing", "crl_signing"],
            opts=child,
        )
        self.ca_certificate_pem = ca.cert_pem
        self.server_pems = {}
        for slot in args.servers:
            key = tls.PrivateKey(f"{name}-{slot.hostname}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
            request = tls.CertRequest(
                f"{name}-{slot.hostname}-csr",
                private_key_pem=key.private_key_pem,
                subject=tls.CertRequestSubjectArgsDict(common_name=slot.hostname, organization="webinfra"),
                dns_names=[slot.hostname],
                ip_addresses=[slot.private_ip],
                opts=child,
            )
            certificate = tls.LocallySignedCert(
                f"{name}-{slot.hostname}-cert",
                cert_request_pem=request.cert_request_pem,
                ca_private_key_pem=ca_key.private_key_pem,
                ca_cert_pem=ca.cert_pem,
                validity_period_hours=args.validity_days * 24,
                early_renewal_hours=60 * 24,
                allowed_uses=["digital_signature", "key_encipherment", "server_auth", "client_auth"],
                opts=child,
            )
            self.server_pems[slot.hostname] = pulumi.Output.secret(
                pulumi.Output.concat(certificate.cert_pem, key.private_key_pem)
            )
        self.register_outputs({"ca_certificate_pem": self.ca_certificate_pem})
