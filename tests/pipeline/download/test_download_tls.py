"""HTTPS through the pinned connection: the socket goes to the vetted address, and TLS is still
verified against the name in the URL (SNI + hostname check), not against the IP."""

from __future__ import annotations

import dataclasses
import datetime
import ssl

import pytest

from pipeline.download.address_guard import StaticResolver
from pipeline.download.stage import Downloader
from pipeline.sample.server import SampleServer
from schemas import Record, Status

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _self_signed(tmp_path, name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path, fixture_images):
    cert, key = _self_signed(tmp_path, "photos.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with SampleServer(files={"photo.jpg": fixture_images["photo.jpg"]}, ssl_context=context) as s:
        yield s, cert


def _row(url: str) -> Record:
    return Record(uid="000000000000", shard_id=0, row_index=0, url=url)


def test_https_pinned_and_verified(tls_server, fast_download_config):
    server, cert = tls_server
    config = dataclasses.replace(
        fast_download_config,
        resolver=StaticResolver({"photos.test": ("127.0.0.1",)}),
        ca_certs=str(cert),
    )
    row = Downloader(config)(_row(f"https://photos.test:{server.port}/photo.jpg"))
    assert row.status == Status.OK, row.error
    assert server.request_headers("photo.jpg")[-1]["host"] == f"photos.test:{server.port}"


def test_https_certificate_for_another_name_is_refused(tls_server, fast_download_config):
    server, cert = tls_server
    config = dataclasses.replace(
        fast_download_config,
        resolver=StaticResolver({"evil.test": ("127.0.0.1",)}),
        ca_certs=str(cert),
    )
    row = Downloader(config)(_row(f"https://evil.test:{server.port}/photo.jpg"))
    assert row.status == Status.CONNECTION_ERROR
    assert "TLS error" in row.error
    assert row.download_attempts == 1  # a certificate problem is not retried


def test_https_untrusted_certificate_is_refused(tls_server, fast_download_config):
    server, _cert = tls_server
    config = dataclasses.replace(
        fast_download_config, resolver=StaticResolver({"photos.test": ("127.0.0.1",)})
    )
    row = Downloader(config)(_row(f"https://photos.test:{server.port}/photo.jpg"))
    assert row.status == Status.CONNECTION_ERROR
    assert "TLS error" in row.error and "certificate" in row.error.lower()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_https_by_ip_literal_without_verification(tls_server, fast_download_config):
    server, _cert = tls_server
    config = dataclasses.replace(fast_download_config, verify_tls=False)
    row = Downloader(config)(_row(f"https://127.0.0.1:{server.port}/photo.jpg"))
    assert row.status == Status.OK, row.error
