"""Security: TLS and mutual TLS on the gRPC port (certificates made at test time with
`cryptography`), the metrics bind address, and model names that try to leave the repository,
over every RPC that takes one."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service import cli
from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.convserve.v1 import inference_pb2_grpc as pb_grpc
from service._proto.inference import grpc_service_pb2 as kpb
from service._proto.inference import grpc_service_pb2_grpc as kpb_grpc
from service.client import ConvserveClient
from service.errors import ConvserveError, SettingsError
from service.server import Server
from service.settings import Settings
from tests.service import onnx_builders
from tests.service.conftest import ServerThread, make_settings, png

# A refused handshake surfaces as UNAVAILABLE on the client; a short timeout keeps it quick.
REFUSED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


# ---- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path  # signed by other_ca
    other_client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer if issuer is not None else (name, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key = _key(), _key()
    ca = _cert("convserve test CA", ca_key, None, ca=True)
    other = _cert("some other CA", other_key, None, ca=True)
    ca_path, _ = _write(d, "ca", ca, ca_key)
    other_path, _ = _write(d, "other-ca", other, other_key)
    server_key, client_key, stranger_key = _key(), _key(), _key()
    server_cert, server_key_path = _write(
        d, "server", _cert("localhost", server_key, (ca.subject, ca_key), server=True), server_key
    )
    client_cert, client_key_path = _write(
        d, "client", _cert("client", client_key, (ca.subject, ca_key)), client_key
    )
    stranger_cert, stranger_key_path = _write(
        d, "stranger", _cert("client", stranger_key, (other.subject, other_key)), stranger_key
    )
    return Pki(
        ca_path, server_cert, server_key_path, client_cert, client_key_path,
        other_path, stranger_cert, stranger_key_path,
    )  # fmt: skip


def _tls_server(repository: Path, pki: Pki, *, mutual: bool) -> ServerThread:
    settings = make_settings(
        repository,
        load_models=("tiny_image",),
        metrics_port=-1,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca if mutual else None,
    )
    return ServerThread(settings).start()


@pytest.fixture(scope="module")
def tls_server(repository: Path, pki: Pki) -> Iterator[ServerThread]:
    thread = _tls_server(repository, pki, mutual=False)
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def mtls_server(repository: Path, pki: Pki) -> Iterator[ServerThread]:
    thread = _tls_server(repository, pki, mutual=True)
    yield thread
    thread.stop()


def _classify(client: ConvserveClient, rng: np.random.Generator) -> pb.ClassifyImageResponse:
    return client.classify(png(rng.integers(0, 256, size=(8, 8), dtype=np.uint8)), top_k=3)


def _refused(client: ConvserveClient) -> str:
    with client, pytest.raises(grpc.RpcError) as exc:
        client.health()
    err = exc.value
    assert isinstance(err, grpc.Call)
    assert err.code() in REFUSED, err
    return err.details() or ""


# ---- TLS ----------------------------------------------------------------------------------------


def test_tls_client_is_served(tls_server: ServerThread, pki: Pki, rng: np.random.Generator) -> None:
    with ConvserveClient(tls_server.target, tls_ca=pki.ca, timeout=10) as client:
        assert client.health() == "SERVING"
        reply = _classify(client, rng)
        assert reply.model == "tiny_image" and len(reply.classes) == 3
    # The certificate names localhost too; and a name override reaches it by address.
    port = tls_server.target.rsplit(":", 1)[1]
    with ConvserveClient(f"localhost:{port}", tls_ca=pki.ca, timeout=10) as client:
        assert client.health() == "SERVING"
    with ConvserveClient(
        tls_server.target, tls_ca=pki.ca, tls_server_name="localhost", timeout=10
    ) as client:
        assert client.health() == "SERVING"


def _still_serving(target: str, pki: Pki, *, mutual: bool = False) -> None:
    """The refusals above must come from the handshake, not from a server that went away."""
    cert, key = (pki.client_cert, pki.client_key) if mutual else (None, None)
    with ConvserveClient(target, tls_ca=pki.ca, tls_cert=cert, tls_key=key, timeout=10) as client:
        assert client.health() == "SERVING"


def test_tls_server_refuses_plaintext(tls_server: ServerThread, pki: Pki) -> None:
    _refused(ConvserveClient(tls_server.target, timeout=3))
    _still_serving(tls_server.target, pki)


def test_tls_client_refuses_a_server_its_ca_did_not_sign(
    tls_server: ServerThread, pki: Pki
) -> None:
    details = _refused(ConvserveClient(tls_server.target, tls_ca=pki.other_ca, timeout=3))
    assert "CERTIFICATE_VERIFY_FAILED" in details
    # And a certificate for another name.
    details = _refused(
        ConvserveClient(
            tls_server.target, tls_ca=pki.ca, tls_server_name="elsewhere.example", timeout=3
        )
    )
    assert "Hostname Verification" in details or "verif" in details.lower()
    _still_serving(tls_server.target, pki)


def test_mutual_tls_with_a_client_certificate(
    mtls_server: ServerThread, pki: Pki, rng: np.random.Generator
) -> None:
    with ConvserveClient(
        mtls_server.target,
        tls_ca=pki.ca,
        tls_cert=pki.client_cert,
        tls_key=pki.client_key,
        timeout=10,
    ) as client:
        assert client.health() == "SERVING"
        assert _classify(client, rng).classes


def test_mutual_tls_refuses_clients_without_a_valid_certificate(
    mtls_server: ServerThread, pki: Pki
) -> None:
    target = mtls_server.target
    _refused(ConvserveClient(target, timeout=3))  # plaintext
    _refused(ConvserveClient(target, tls_ca=pki.ca, timeout=3))  # TLS, no client certificate
    _refused(  # a client certificate from another CA
        ConvserveClient(
            target,
            tls_ca=pki.ca,
            tls_cert=pki.other_client_cert,
            tls_key=pki.other_client_key,
            timeout=3,
        )
    )
    _still_serving(target, pki, mutual=True)


def test_health_command_speaks_tls(
    mtls_server: ServerThread, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["health", "--server", mtls_server.target, "--timeout", "5"]
    mutual = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert)]
    assert cli.main([*base, *mutual, "--tls-key", str(pki.client_key)]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert cli.main([*base, "--timeout", "2"]) == 1  # plaintext: refused, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convserve: UNAVAILABLE"), err
    # A certificate without its key is a usage error, said in one line.
    assert cli.main([*base, *mutual]) == 2
    assert "both --tls-cert and --tls-key" in capsys.readouterr().err
    assert cli.main([*base, "--tls-ca", str(pki.ca.parent / "absent.pem")]) == 2
    assert "absent.pem: cannot read" in capsys.readouterr().err


def test_tls_settings_from_flags_and_environment(pki: Pki) -> None:
    env = {"CONVSERVE_TLS_CERT": str(pki.server_cert), "CONVSERVE_TLS_KEY": str(pki.server_key)}
    s = Settings.from_sources({"tls_client_ca": str(pki.ca)}, env)
    assert (s.tls_cert, s.tls_key, s.tls_client_ca) == (pki.server_cert, pki.server_key, pki.ca)
    assert Settings.from_sources({}, {"CONVSERVE_TLS_CERT": ""}).tls_cert is None
    with pytest.raises(SettingsError, match="tls-key"):
        Settings.from_sources({"tls_cert": str(pki.server_cert)}, {})
    with pytest.raises(SettingsError, match="tls-client-ca"):
        Settings.from_sources({"tls_client_ca": str(pki.ca)}, {})


@pytest.mark.parametrize("problem", ["missing", "not pem", "key as cert"])
async def test_unusable_certificate_files_fail_start_up(
    repository: Path, pki: Pki, tmp_path: Path, problem: str
) -> None:
    cert, key = pki.server_cert, pki.server_key
    if problem == "missing":
        cert, expected = tmp_path / "nope.pem", "cannot read it"
    elif problem == "not pem":
        key = tmp_path / "key.der"
        key.write_bytes(os.urandom(64))
        expected = "not a PEM file with a PRIVATE KEY"
    else:
        cert, expected = pki.server_key, "not a PEM file with a CERTIFICATE"
    settings = make_settings(
        repository, load_models=("tiny_image",), metrics_port=-1, tls_cert=cert, tls_key=key
    )
    with pytest.raises(ConvserveError, match=expected):
        await Server(settings).start()


# ---- metrics bind address -----------------------------------------------------------------------


def _outside_address() -> str | None:
    """A non-loopback address of this machine, or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


async def test_metrics_bind_address_and_disabling(repository: Path) -> None:
    server = await Server(make_settings(repository, load_models=("tiny_image",))).start()
    try:
        port = server.metrics_port
        assert port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"convserve_model_ready" in response.read()
        outside = _outside_address()
        if outside is not None:  # bound to loopback only: not reachable from outside
            with socket.socket() as s, pytest.raises(OSError):
                s.settimeout(2)
                s.connect((outside, port))
    finally:
        await server.stop(0)
    off = await Server(
        make_settings(repository, load_models=("tiny_image",), metrics_port=-1)
    ).start()
    try:
        assert off.metrics_port == -1 and "metrics=127.0.0.1:-1 " in off.ready_line
        assert off.metrics._server is None  # no HTTP server at all
    finally:
        await off.stop(0)


# ---- model names that leave the repository ------------------------------------------------------

ESCAPES = ["../x", "/etc", "a/../../b", "..", "escape", "x/../../outside", "sub/../inside", "\\x"]


@pytest.fixture(scope="module")
def escape_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A repository with `inside` and a symlink `escape` to a valid model outside it; no
    load_models, so start-up loads whatever the repository holds."""
    base = tmp_path_factory.mktemp("escape")
    root = base / "repo"
    onnx_builders.write_model(root, "inside")
    onnx_builders.write_model(base, "outside")
    onnx_builders.write_model(base, "x")
    os.symlink(base / "outside", root / "escape")
    thread = ServerThread(make_settings(root, load_models=(), metrics_port=-1)).start()
    yield thread
    thread.stop()


def test_a_symlink_out_of_the_repository_is_not_loaded_at_start(
    escape_server: ServerThread,
) -> None:
    with grpc.insecure_channel(escape_server.target) as channel:
        stub = kpb_grpc.GRPCInferenceServiceStub(channel)
        index = stub.RepositoryIndex(kpb.RepositoryIndexRequest(), timeout=5).models
        assert [m.name for m in index] == ["inside"]
        assert stub.ServerReady(kpb.ServerReadyRequest(), timeout=5).ready


@pytest.mark.parametrize("name", ESCAPES)
def test_names_cannot_leave_the_repository_on_any_rpc(
    escape_server: ServerThread, name: str
) -> None:
    x = np.random.default_rng().standard_normal((1, 1, 4, 4)).astype(np.float32)
    with grpc.insecure_channel(escape_server.target) as channel:
        kserve = kpb_grpc.GRPCInferenceServiceStub(channel)
        task = pb_grpc.InferenceStub(channel)
        infer = kpb.ModelInferRequest(model_name=name)
        infer.inputs.add(name="input", datatype="FP32", shape=[1, 1, 4, 4])
        infer.raw_input_contents.append(x.tobytes())
        calls = [
            (kserve.RepositoryModelLoad, kpb.RepositoryModelLoadRequest(model_name=name)),
            (kserve.RepositoryModelUnload, kpb.RepositoryModelUnloadRequest(model_name=name)),
            (kserve.ModelReady, kpb.ModelReadyRequest(name=name)),
            (kserve.ModelMetadata, kpb.ModelMetadataRequest(name=name)),
            (kserve.ModelConfig, kpb.ModelConfigRequest(name=name)),
            (kserve.ModelStatistics, kpb.ModelStatisticsRequest(name=name)),
            (kserve.ModelInfer, infer),
            (task.GetModel, pb.GetModelRequest(name=name)),
            (task.ClassifyImage, pb.ClassifyImageRequest(model=name, image=b"\x89PNG")),
        ]
        for call, request in calls:
            try:
                reply = call(request, timeout=10)
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                details = exc.details() or ""  # type: ignore[attr-defined]
                assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (
                    call,
                    code,
                    details,
                )
                if call in (kserve.RepositoryModelLoad, kserve.RepositoryModelUnload):
                    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
                    assert "invalid model name" in details
            else:  # only ModelReady answers rather than failing: not ready
                assert call is kserve.ModelReady and not reply.ready
        # Nothing outside got loaded, and the server still serves its own model.
        index = kserve.RepositoryIndex(kpb.RepositoryIndexRequest(), timeout=5).models
        assert [(m.name, m.state) for m in index] == [("inside", "READY")]
        infer.model_name = "inside"
        assert kserve.ModelInfer(infer, timeout=10).outputs
