"""Test PKI and JWTs, made at test time (no key is ever committed).

A mesh CA issuing SPIFFE workload certificates (as Istio's does), a rogue CA,
an expired client certificate, and an RSA key signing RS256 JWTs with its JWKS.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

TRUST_DOMAIN = "cluster.local"


def spiffe(namespace: str, service_account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class CA:
    def __init__(self, directory: Path, name: str) -> None:
        self.dir = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = directory / f"{name}.crt"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, uri: str, dns: str | None = None, expired: bool = False) -> tuple[Path, Path]:
        """A workload certificate with a SPIFFE URI SAN; returns (cert, key) paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        if expired:
            not_before, not_after = now - dt.timedelta(days=10), now - dt.timedelta(days=1)
        else:
            not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=1)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
        if dns:
            sans.append(x509.DNSName(dns))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path

    @staticmethod
    def sha256_hex(cert_path: Path) -> str:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return cert.fingerprint(hashes.SHA256()).hex()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class JwtIssuer:
    """Signs RS256 tokens; `jwks` is what Envoy's jwt_authn verifies them with."""

    def __init__(self, issuer: str, kid: str = "test-key") -> None:
        self.issuer = issuer
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.key.public_key().public_numbers()
        self.jwks = json.dumps(
            {
                "keys": [
                    {
                        "kty": "RSA",
                        "alg": "RS256",
                        "use": "sig",
                        "kid": kid,
                        "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                        "e": _b64url(numbers.e.to_bytes(3, "big")),
                    }
                ]
            }
        )

    def token(self, sub: str, aud: str = "meshaudit", expires_in: int = 600, iss: str | None = None) -> str:
        now = int(dt.datetime.now(dt.UTC).timestamp())
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        claims = {"iss": iss or self.issuer, "sub": sub, "aud": aud, "iat": now, "exp": now + expires_in}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"
