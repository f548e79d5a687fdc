"""Test certificates made with openssl (Debian package openssl): a CA and the certificates it
signs, for TLS tests against real peers (baresip, `openssl s_server`, the gateway's listener)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.binaries import require_binary


@dataclass(frozen=True)
class Issued:
    """A certificate and its key (PEM files), and both in one file (baresip's format)."""

    cert: Path
    key: Path
    combined: Path


class TestCa:
    """A throwaway CA in `workdir/name`: `issue()` signs leaf certificates with a SAN."""

    __test__ = False  # not a pytest class

    def __init__(self, workdir: Path, name: str = "ca") -> None:
        self.openssl = require_binary("openssl", "openssl")
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = self.dir / "ca.pem", self.dir / "ca.key"
        self._run(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "2", "-subj", f"/CN=Test CA {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", str(self.key), "-out", str(self.cert),
        )  # fmt: skip

    def issue(self, name: str, san: str) -> Issued:
        """A leaf certificate for `san` (e.g. "IP:127.0.0.1" or "DNS:trunk.example"), for
        servers and clients alike."""
        key, csr, cert = (self.dir / f"{name}{ext}" for ext in (".key", ".csr", ".pem"))
        self._run(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr),
        )  # fmt: skip
        ext = self.dir / f"{name}.ext"
        ext.write_text(
            f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
        )
        self._run(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        combined = self.dir / f"{name}-combined.pem"
        combined.write_text(cert.read_text() + key.read_text())
        return Issued(cert, key, combined)

    def _run(self, *args: str) -> None:
        subprocess.run([self.openssl, *args], check=True, capture_output=True)


class TlsServer:
    """`openssl s_server` on loopback as a TLS peer that accepts connections and prints what
    it is sent (and the client certificate it was shown); stopped by PID in `kill()`."""

    def __init__(self, workdir: Path, port: int, server: Issued, *extra: str) -> None:
        openssl = require_binary("openssl", "openssl")
        self.log = workdir / f"s_server-{port}.log"
        self.args = [
            openssl, "s_server", "-accept", f"127.0.0.1:{port}",
            "-cert", str(server.cert), "-key", str(server.key), *extra,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TlsServer:
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,  # kept open: s_server stops when its stdin ends
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while "ACCEPT" not in self.output():  # listening
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"openssl s_server did not start: {self.output()[-1000:]}")
            time.sleep(0.05)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(3)
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
