"""TLS for the gRPC port: plaintext, TLS (--tls-cert, --tls-key) or mutual TLS (plus
--tls-client-ca: clients must present a certificate that CA signed).

The files are read once, at start-up: replacing a certificate takes a restart (a rolling one, in
Kubernetes). /metrics stays plain HTTP, for Prometheus inside the cluster.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from service.errors import ConvserveError
from service.settings import Settings


def server_credentials(s: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from settings (None: plaintext); mutual TLS when tls_client_ca is set.

    Raises ConvserveError naming the file when one cannot be read or is not PEM.
    """
    if s.tls_cert is None or s.tls_key is None:
        return None
    cert = _read_pem(s.tls_cert, "tls-cert", b"CERTIFICATE")
    key = _read_pem(s.tls_key, "tls-key", b"PRIVATE KEY")
    client_ca = (
        None
        if s.tls_client_ca is None
        else _read_pem(s.tls_client_ca, "tls-client-ca", b"CERTIFICATE")
    )
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def transport_security(s: Settings) -> str:
    if s.tls_cert is None:
        return "plaintext"
    return "mutual TLS" if s.tls_client_ca is not None else "TLS"


def _read_pem(path: Path, flag: str, marker: bytes) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConvserveError(
            f"--{flag} {str(path)!r}: cannot read it: {exc.strerror or exc}"
        ) from None
    # grpc only parses the PEM at the first handshake, where a bad file would surface as every
    # client failing to connect; a missing marker is the common mistake (a DER file, a swapped
    # cert and key), so catch it here.
    if b"-----BEGIN " not in data or marker not in data:
        raise ConvserveError(f"--{flag} {str(path)!r}: not a PEM file with a {marker.decode()}")
    return data
