"""LoadBalancerCertificate: the certificate HAProxy serves until (or unless) an ACME one replaces it.

Self-signed for the load balancer's public address (and the domain, when set), ECDSA P-256, made by
the program (pulumi-tls): the key is a secret in the state and reaches the host only through SSM
Parameter Store; the certificate is exported so clients can trust it (`curl --cacert`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls


@dataclass
class LoadBalancerCertificateArgs:
    public_ip: pulumi.Input[str]
    domain: str | None
    stack: str
    validity_days: int = 365


class LoadBalancerCertificate(pulumi.ComponentResource):
    certificate_pem: pulumi.Output[str]
    haproxy_pem: pulumi.Output[str]  # certificate and key in one file, as HAProxy reads it (secret)

    def __init__(self, name: str, args: LoadBalancerCertificateArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:lb_certificate:LoadBalancerCertificate", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        certificate = tls.SelfSignedCert(
            f"{name}-cert",
            private_key_pem=key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgsDict(
                common_name=args.domain or f"webinfra {args.stack}", organization="webinfra"
            ),
            dns_names=[args.domain] if args.domain else [],
            ip_addresses=[args.public_ip],
            validity_period_hours=args.validity_days * 24,
            early_renewal_hours=30 * 24,  # a `pulumi up` in the last 30 days makes a new one
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=child,
        )
        self.certificate_pem = certificate.cert_pem
        self.haproxy_pem = pulumi.Output.secret(pulumi.Output.concat(certificate.cert_pem, key.private_key_pem))
        self.register_outputs({"certificate_pem": self.certificate_pem})
