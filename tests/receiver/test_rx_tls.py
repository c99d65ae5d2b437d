"""TLS: ``mqtts://`` verifies the broker against the provisioned CA; another CA is refused."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller.broker import wait_for_port
from receiver.mqtt import MqttSession

from rx_support import free_port, mosquitto_binary, unique


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def tls_broker() -> Iterator[tuple[int, Path, Path]]:
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    # Mosquitto started as root reads its files as user mosquitto: not under pytest's 0700 tmp_path.
    tmp_path = Path(tempfile.mkdtemp(prefix="loaxa-tls-"))
    ca_key, ca_cert = _ca("loaxa test CA")
    _other_key, other_cert = _ca("someone else's CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    server = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    tmp_path.chmod(0o755)
    (tmp_path / "ca.crt").write_bytes(_pem(ca_cert))
    (tmp_path / "other.crt").write_bytes(_pem(other_cert))
    (tmp_path / "server.crt").write_bytes(_pem(server))
    (tmp_path / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    for name in ("ca.crt", "server.crt", "server.key"):
        (tmp_path / name).chmod(0o644)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"cafile {tmp_path}/ca.crt\ncertfile {tmp_path}/server.crt\nkeyfile {tmp_path}/server.key\n")
    with (tmp_path / "mosquitto.log").open("wb") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_for_port(port, 10):
            pytest.fail((tmp_path / "mosquitto.log").read_text())
        yield port, tmp_path / "ca.crt", tmp_path / "other.crt"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp_path, ignore_errors=True)


# paho 2.1 does not close the socket of a failed TLS handshake (it is garbage-collected, with a ResourceWarning).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_mqtts_connects_with_the_provisioned_ca_and_refuses_another(tls_broker: tuple[int, Path, Path]) -> None:
    port, ca, other = tls_broker
    good = MqttSession(unique("tls-"), "127.0.0.1", port, tls=True, ca_file=str(ca))
    bad = MqttSession(unique("tls-"), "127.0.0.1", port, tls=True, ca_file=str(other))
    try:
        good.start()
        bad.start()
        assert good.wait_connected(15)
        time.sleep(1.5)
        assert not bad.connected  # a broker the CA did not sign is not trusted
    finally:
        good.stop()
        bad.stop()
