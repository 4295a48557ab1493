"""Make a local certificate authority and certificates for a development cluster.

    python deploy/dev_ca.py OUT_DIR [--hosts localhost,127.0.0.1,shard1.example]

writes OUT_DIR/ca.pem (trust this everywhere), OUT_DIR/cluster.pem and
OUT_DIR/cluster-key.pem (the identity routers and shards present to each
other and serve with; valid for the given host names and IPs), and
OUT_DIR/client.pem / client-key.pem (a certificate for operators' tools).
Only for development: production clusters use their own CA.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Murmur development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Murmur development CA"))
        .issuer_name(_name("Murmur development CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    hosts: list[str],
    usages: list[x509.ObjectIdentifier],
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_alt_names(hosts)), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def write_dev_ca(out: Path, hosts: list[str]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca()
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cluster_cert, cluster_key = issue(ca_key, ca_cert, "murmur-cluster", hosts, both)
    client_cert, client_key = issue(
        ca_key, ca_cert, "murmur-operator", [], [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    files = {
        "ca": out / "ca.pem",
        "cert": out / "cluster.pem",
        "key": out / "cluster-key.pem",
        "client_cert": out / "client.pem",
        "client_key": out / "client-key.pem",
    }
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cluster_cert)
    files["key"].write_bytes(cluster_key)
    files["client_cert"].write_bytes(client_cert)
    files["client_key"].write_bytes(client_key)
    for name in ("key", "client_key"):
        files[name].chmod(0o600)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--hosts", default="localhost,127.0.0.1")
    args = parser.parse_args()
    files = write_dev_ca(args.out, [h.strip() for h in args.hosts.split(",") if h.strip()])
    for role, path in files.items():
        print(f"{role:12} {path}")


if __name__ == "__main__":
    main()
