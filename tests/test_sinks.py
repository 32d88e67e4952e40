"""SIEM sinks against real receivers on loopback: Debian's rsyslogd (imudp, imtcp, imtcp over
gtls) and an HTTPS server (http.server + ssl) with a certificate made here. No mocks.

Every test has a SIGALRM guard; rsyslogd is killed by its PID in teardown.
"""

from __future__ import annotations

import datetime as dt
import errno
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import wait_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.actions import sinks as siem
from agent.actions import spool as spooling
from agent.actions.audit import AuditLog
from agent.policy import FACILITIES, Policy, PolicyError, merge, validate

GUARD_S = 90
RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
RSYSLOG_MODULES = Path("/usr/lib/x86_64-linux-gnu/rsyslog")
HOST = "ws-0042"
USER = "alice"
CANARY = "CANARYzq7Typed"


# --------------------------------------------------------------------------- guards and helpers
@pytest.fixture(autouse=True)
def _guard(alarm_guard):
    """Every test here runs under the GUARD_S alarm (conftest.alarm_guard)."""


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dispatcher(sinks, spool_dir: Path, **kw) -> siem.SinkDispatcher:
    kw.setdefault("min_backoff", 0.05)
    kw.setdefault("max_backoff", 0.3)
    d = siem.SinkDispatcher(sinks, spool_dir,
                            spooling.key_provider(spool_dir, use_keyring=False),
                            host=HOST, user=USER, version="0.1.0", **kw)
    d.start()
    return d


def sinks_of(*entries) -> list:
    settings = merge([("test policy", {"sinks": list(entries)}, True)])
    assert not settings.errors, settings.errors
    sinks, problems = siem.sinks_from_policy(settings.policy)
    assert not problems, problems
    return sinks


_RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    r"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+) ?(?P<msg>.*)\Z", re.S)
_SD_PARAM = re.compile(r'([^\s=\]"]{1,32})="((?:[^"\\\]]|\\.)*)"')


def parse_rfc5424(line: str) -> dict:
    """Header fields and the cadence SD element's params (unescaped) of one RFC 5424 line."""
    m = _RFC5424.match(line)
    assert m, f"not an RFC 5424 message: {line!r}"
    out = m.groupdict()
    sd = out["sd"]
    assert sd.startswith(f"[{siem.SD_ID} "), sd
    out["params"] = {k: re.sub(r"\\(.)", r"\1", v) for k, v in _SD_PARAM.findall(sd)}
    return out


# --------------------------------------------------------------------------- certificates
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path, cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    path = directory / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A test CA, a server certificate for 127.0.0.1/localhost signed by it, and another CA."""
    d = tmp_path_factory.mktemp("certs")
    ca_key, ca_cert, ca_path = make_ca(d, "cadence-test-ca")
    _, _, other_ca = make_ca(d, "some-other-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost"))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return {"ca": ca_path, "other_ca": other_ca, "cert": d / "server.pem",
            "key": d / "server.key"}


# --------------------------------------------------------------------------- rsyslogd
class Rsyslogd:
    """Debian's rsyslogd in the foreground with a private config: everything it receives goes
    to ``out`` as rsyslog's parsed JSON (%jsonmesg%), one line per message."""

    def __init__(self, directory: Path, *, udp: int | None = None, tcp: int | None = None,
                 tls: int | None = None, certs: dict | None = None) -> None:
        self.directory = directory
        self.udp, self.tcp, self.tls = udp, tcp, tls
        self.out = directory / "received.jsonl"
        self.work = directory / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "rsyslog.conf"
        self.pidfile = directory / "rsyslogd.pid"
        self.proc: subprocess.Popen | None = None
        lines = []
        if tls:
            lines.append(f'global(workDirectory="{self.work}" defaultNetstreamDriver="gtls" '
                         f'defaultNetstreamDriverCAFile="{certs["ca"]}" '
                         f'defaultNetstreamDriverCertFile="{certs["cert"]}" '
                         f'defaultNetstreamDriverKeyFile="{certs["key"]}")')
            lines.append('module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" '
                         'streamDriver.authMode="anon")')
            lines.append(f'input(type="imtcp" address="127.0.0.1" port="{tls}")')
        else:
            lines.append(f'global(workDirectory="{self.work}")')
            if udp:
                lines.append('module(load="imudp")')
                lines.append(f'input(type="imudp" address="127.0.0.1" port="{udp}")')
            if tcp:
                lines.append('module(load="imtcp")')
                lines.append(f'input(type="imtcp" address="127.0.0.1" port="{tcp}")')
        lines.append('template(name="json" type="string" string="%jsonmesg%\\n")')
        lines.append(f'*.* action(type="omfile" file="{self.out}" template="json")')
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.pidfile.unlink(missing_ok=True)
        self.log = open(self.directory / "rsyslogd.stderr", "ab")
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(self.conf), "-i",
                                      str(self.pidfile)], stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        port = self.tls or self.tcp
        if port:
            def listening():
                if self.proc.poll() is not None:
                    raise AssertionError("rsyslogd exited: " + self.stderr())
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    return True
                except OSError:
                    return False
            assert wait_for(listening, 15)
        if self.udp:  # UDP has no handshake: probe until rsyslogd writes a probe out
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                def probed():
                    s.sendto(b"<14>1 - - probe - probe - ready", ("127.0.0.1", self.udp))
                    return any(r.get("msgid") == "probe" for r in self.records())
                assert wait_for(probed, 15, 0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stderr(self) -> str:
        try:
            return (self.directory / "rsyslogd.stderr").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def records(self, msgid: str | None = None) -> list[dict]:
        try:
            text = self.out.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            if line.strip():
                rec = json.loads(line)
                if msgid is None or rec.get("msgid") == msgid:
                    out.append(rec)
        return out

    def cadence(self) -> list[dict]:
        return [r for r in self.records() if r.get("app-name") == "cadence"]


def _need_rsyslogd():
    if not Path(RSYSLOGD).exists():
        pytest.skip("rsyslogd not installed (apt-get install rsyslog)")


@pytest.fixture
def rsyslog_plain(tmp_path):
    _need_rsyslogd()
    daemon = Rsyslogd(tmp_path / "rsyslog", udp=free_port(socket.SOCK_DGRAM), tcp=free_port())
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.kill()


@pytest.fixture
def rsyslog_tls(tmp_path, certs):
    _need_rsyslogd()
    if not (RSYSLOG_MODULES / "lmnsd_gtls.so").exists():
        pytest.skip("rsyslog's gtls driver is missing: apt-get install rsyslog-gnutls")
    daemon = Rsyslogd(tmp_path / "rsyslog-tls", tls=free_port(), certs=certs)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.kill()


# --------------------------------------------------------------------------- HTTPS receiver
class HttpsCollector:
    """http.server over TLS in a thread; keeps every POST as (path, headers, parsed JSON)."""

    def __init__(self, certs: dict, status: int = 200) -> None:
        self.certs = certs
        self.port = free_port()
        self.status = status
        self.reply = b'{"text":"Success","code":0}'
        self.requests: list[tuple[str, dict, object]] = []
        self.raw: list[bytes] = []
        self._server = None
        self._thread = None

    def start(self) -> None:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                collector.raw.append(bytes(self.path, "utf-8") + bytes(self.headers) + body)
                collector.requests.append((self.path, dict(self.headers), json.loads(body)))
                reply = collector.reply
                self.send_response(collector.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certs["cert"], self.certs["key"])
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def url(self, path: str = "") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def bodies(self) -> list:
        return [body for _, _, body in self.requests]


@pytest.fixture
def https(certs):
    collector = HttpsCollector(certs)
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()


# --------------------------------------------------------------------------- syslog
def test_syslog_udp_and_tcp_deliver_rfc5424_with_structured_data(rsyslog_plain, tmp_path):
    sinks = sinks_of(
        {"type": "syslog", "name": "udp", "host": "127.0.0.1", "port": rsyslog_plain.udp,
         "transport": "udp"},
        {"type": "syslog", "name": "tcp", "host": "127.0.0.1", "port": rsyslog_plain.tcp,
         "transport": "tcp"})
    d = dispatcher(sinks, tmp_path / "spool")
    try:
        d.submit("impostor", {"verdict": "impostor", "score": 3.21, "trust": 0.08,
                              "action": "lock"})
        for n in range(3):  # back-to-back messages: TCP framing must keep them apart
            d.submit("lock", {"reason": "impostor", "method": "i3lock", "locked": True,
                              "seq": n})
        assert wait_for(lambda: len(rsyslog_plain.records("impostor")) == 2
                 and len(rsyslog_plain.records("lock")) == 6)
    finally:
        d.stop(2)
    by_input = {r["inputname"]: r for r in rsyslog_plain.records("impostor")}
    assert set(by_input) == {"imudp", "imtcp"}
    event_ids = set()
    for rec in by_input.values():
        # rsyslog's own RFC 5424 parser agrees with what we meant ...
        assert rec["pri"] == str(FACILITIES["authpriv"] * 8 + siem.ALERT) == "81"
        assert rec["syslogfacility"] == "10" and rec["syslogseverity"] == "1"
        assert rec["protocol-version"] == "1"
        assert rec["app-name"] == "cadence" and rec["msgid"] == "impostor"
        assert rec["hostname"] == HOST and rec["procid"] == str(os.getpid())
        assert rec["msg"] == "Impostor suspected at the keyboard"
        assert rec["structured-data"].startswith("[cadence@32473 ")
        # ... and so does a strict parse of the raw line (no framing left in it)
        line = parse_rfc5424(rec["rawmsg"])
        assert line["pri"] == "81" and line["app"] == "cadence" and line["host"] == HOST
        params = dict(line["params"])
        event_ids.add(params.pop("event_id"))
        assert params == {"verdict": "impostor", "score": "3.21", "trust": "0.08",
                          "action": "lock", "kind": "impostor", "user": USER, "version": "0.1.0"}
        when = dt.datetime.fromisoformat(line["ts"].replace("Z", "+00:00"))
        assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 60
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    (event_id,) = event_ids      # one event, the same id at every collector: a SIEM can dedupe
    assert re.fullmatch(r"[0-9a-f]{32}", event_id)
    tcp_locks = [parse_rfc5424(r["rawmsg"]) for r in rsyslog_plain.records("lock")
                 if r["inputname"] == "imtcp"]
    assert [p["params"]["seq"] for p in tcp_locks] == ["0", "1", "2"]
    assert all(p["pri"] == str(10 * 8 + siem.NOTICE) and p["params"]["locked"] == "true"
               for p in tcp_locks)


def test_tcp_collector_restart_delivers_every_alert_in_order(rsyslog_plain, tmp_path):
    sinks = sinks_of({"type": "syslog", "name": "tcp", "host": "127.0.0.1",
                      "port": rsyslog_plain.tcp, "transport": "tcp"})
    d = dispatcher(sinks, tmp_path / "spool")
    try:
        d.submit("impostor", {"verdict": "impostor", "seq": 0})
        assert wait_for(lambda: len(rsyslog_plain.records("impostor")) == 1)
        rsyslog_plain.stop()  # the collector goes away mid-run; our connection is still open
        for n in range(1, 6):
            d.submit("impostor", {"verdict": "impostor", "seq": n})
        assert wait_for(lambda: d.status()[0]["failing"] and d.status()[0]["spooled"] == 5)
        time.sleep(0.5)  # a few retries against the closed port
        assert d.status()[0]["spooled"] == 5
        rsyslog_plain.start()
        assert wait_for(lambda: len(rsyslog_plain.records("impostor")) == 6, 20)
        assert wait_for(lambda: d.status()[0]["spooled"] == 0)
    finally:
        d.stop(2)
    seqs = [parse_rfc5424(r["rawmsg"])["params"]["seq"] for r in rsyslog_plain.records("impostor")]
    assert seqs == ["0", "1", "2", "3", "4", "5"]
    assert not rsyslog_plain.records("spool_overflow")


def test_tls_syslog_verifies_the_collector_certificate(rsyslog_tls, tmp_path, certs):
    good = sinks_of({"type": "syslog", "name": "tls", "host": "127.0.0.1",
                     "port": rsyslog_tls.tls, "transport": "tls", "ca_file": str(certs["ca"]),
                     "facility": "local4"})
    wrong = sinks_of({"type": "syslog", "name": "tls-wrong-ca", "host": "127.0.0.1",
                      "port": rsyslog_tls.tls, "transport": "tls",
                      "ca_file": str(certs["other_ca"])})
    d_good = dispatcher(good, tmp_path / "spool")
    d_wrong = dispatcher(wrong, tmp_path / "spool")
    try:
        d_wrong.submit("tamper", {"verdict": "tamper", "reason": "from-untrusted"})
        d_good.submit("injection", {"verdict": "injection", "rule": "uniform-gaps",
                                    "keys_observed": 40, "recent_gaps_ms": [8.0, 8.1, 7.9]})
        assert wait_for(lambda: rsyslog_tls.records("injection"))
        assert wait_for(lambda: d_wrong.status()[0]["failing"])
    finally:
        d_good.stop(2)
        d_wrong.stop(1)
    rec = rsyslog_tls.records("injection")[0]
    assert rec["pri"] == str(FACILITIES["local4"] * 8 + siem.ALERT)
    params = parse_rfc5424(rec["rawmsg"])["params"]
    assert params["rule"] == "uniform-gaps" and params["recent_gaps_ms"] == "8,8.1,7.9"
    assert not rsyslog_tls.records("tamper")  # never sent to a server it could not verify
    assert d_wrong.status()[0]["spooled"] == 1 and d_wrong.status()[0]["sent"] == 0


def test_heartbeat_on_its_interval_at_info_severity(rsyslog_plain, tmp_path):
    sinks = sinks_of({"type": "syslog", "host": "127.0.0.1", "port": rsyslog_plain.tcp})
    d = dispatcher(sinks, tmp_path / "spool", heartbeat_s=60)
    try:
        assert d.maybe_heartbeat(1000.0, {"state": "protecting"}) is False  # starts the clock
        assert d.maybe_heartbeat(1059.0, {"state": "protecting"}) is False
        assert d.maybe_heartbeat(1060.0, {"state": "protecting"}) is True
        assert wait_for(lambda: rsyslog_plain.records("heartbeat"))
    finally:
        d.stop(2)
    rec = rsyslog_plain.records("heartbeat")[0]
    assert rec["pri"] == str(10 * 8 + siem.INFO) and rec["msg"] == "Cadence agent heartbeat"
    params = parse_rfc5424(rec["rawmsg"])["params"]
    assert params["state"] == "protecting" and params["interval_s"] == "60"


def test_no_heartbeat_waits_for_a_collector_that_is_down(https, tmp_path, certs):
    """A heartbeat says the agent is alive now: one kept while the collector is down would only
    take an alert's place in the bounded spool."""
    https.stop()
    sinks = sinks_of({"type": "webhook", "name": "hook", "url": https.url("/in"),
                      "ca_file": str(certs["ca"])})
    d = dispatcher(sinks, tmp_path / "spool")
    try:
        d.submit("impostor", {"verdict": "impostor"})
        assert wait_for(lambda: d.status()[0]["failing"])
        for _ in range(5):
            d.heartbeat({"state": "protecting"})
        time.sleep(0.2)
        assert d.status()[0]["spooled"] == 1
        https.start()
        assert wait_for(lambda: d.status()[0]["spooled"] == 0 and not d.status()[0]["failing"])
        d.heartbeat({"state": "protecting"})
        assert wait_for(lambda: len(https.requests) == 2)
    finally:
        d.stop(2)
    assert [b["kind"] for b in https.bodies()] == ["impostor", "heartbeat"]


def test_sd_param_values_are_escaped():
    assert siem.sd_escape('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    event = siem.make_event("state", {"state": "degraded", "reason": "wayland"}, host=HOST,
                            user='we"ird]us\\er', version="0.1.0")
    line = parse_rfc5424(siem.syslog_message(event, 10).decode())
    assert line["params"]["user"] == 'we"ird]us\\er'
    assert line["pri"] == str(10 * 8 + siem.WARNING)  # a state change to degraded
    assert siem.safe_code("John Smith") == "John_Smith"


# --------------------------------------------------------------------------- HTTPS
def test_hec_shape_token_header_and_webhook_object(https, tmp_path, certs, monkeypatch):
    monkeypatch.setenv("CADENCE_TEST_HOOK_TOKEN", "hook-token-77")
    sinks = sinks_of(
        {"type": "splunk_hec", "name": "hec", "url": https.url(), "token": "hec-token-123",
         "ca_file": str(certs["ca"]), "index": "security"},
        {"type": "webhook", "name": "hook", "url": https.url("/hooks/cadence?sig=s3cr3t"),
         "token_env": "CADENCE_TEST_HOOK_TOKEN", "ca_file": str(certs["ca"])})
    d = dispatcher(sinks, tmp_path / "spool")
    try:
        before = time.time()
        d.submit("injection", {"verdict": "injection", "rule": "uniform-gaps",
                               "keys_observed": 40, "recent_gaps_ms": [8.0, 8.1],
                               "action": "lock"})
        assert wait_for(lambda: len(https.requests) == 2)
    finally:
        d.stop(2)
    by_path = {path: (headers, body) for path, headers, body in https.requests}
    headers, hec = by_path["/services/collector/event"]
    assert headers["Authorization"] == "Splunk hec-token-123"
    assert headers["Content-Type"] == "application/json"
    assert set(hec) == {"time", "host", "source", "sourcetype", "index", "event"}
    assert hec["host"] == HOST and hec["index"] == "security"
    assert hec["source"] == "cadence" and hec["sourcetype"] == "cadence:alert"
    assert before - 1 <= hec["time"] <= time.time() + 1
    event = hec["event"]
    assert event["kind"] == "injection" and event["verdict"] == "injection"
    assert event["severity"] == "alert" and event["message"] == "Keystroke injection detected"
    assert event["user"] == USER and event["host"] == HOST and event["version"] == "0.1.0"
    assert event["recent_gaps_ms"] == [8.0, 8.1] and event["keys_observed"] == 40
    headers, hook = by_path["/hooks/cadence?sig=s3cr3t"]
    assert headers["Authorization"] == "Bearer hook-token-77"
    assert {k: hook[k] for k in ("kind", "verdict", "rule", "user", "host", "severity")} == {
        "kind": "injection", "verdict": "injection", "rule": "uniform-gaps", "user": USER,
        "host": HOST, "severity": "alert"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", hook["time"])


def _spool_files(spool_dir: Path) -> list[Path]:
    return [p for p in spool_dir.rglob("*") if p.is_file()]


def test_spool_survives_restart_in_order_and_is_encrypted(https, tmp_path, certs):
    https.stop()  # the collector is down
    spool_dir = tmp_path / "spool"
    config = {"type": "splunk_hec", "name": "hec", "url": https.url(), "token": "hec-token-123",
              "ca_file": str(certs["ca"])}
    d1 = dispatcher(sinks_of(config), spool_dir)
    for n in range(5):
        assert d1.submit("impostor", {"verdict": "impostor", "score": 0.123456 + n, "seq": n,
                                      "reason": "impostor"})
    assert wait_for(lambda: d1.status()[0]["spooled"] == 5 and d1.status()[0]["failing"])
    d1.stop(1)  # the agent stops (or the machine reboots) with alerts still waiting

    # on disk: 0700 folders, 0600 files, nothing readable
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((spool_dir / "hec").stat().st_mode) == 0o700
    files = _spool_files(spool_dir)
    assert len([p for p in files if p.name.endswith(".rec") and p.stem.isdigit()]) == 5
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        blob = path.read_bytes()
        for plain in (b"impostor", HOST.encode(), USER.encode(), b"0.123456", b"seq",
                      b"verdict", b"hec-token-123"):
            assert plain not in blob, (path.name, plain)

    d2 = dispatcher(sinks_of(config), spool_dir)  # the agent starts again
    try:
        d2.submit("impostor", {"verdict": "impostor", "seq": 5})
        https.start()  # same port: the collector is back
        assert wait_for(lambda: len(https.requests) == 6, 20)
        assert wait_for(lambda: d2.status()[0]["spooled"] == 0)
    finally:
        d2.stop(2)
    assert [b["event"]["seq"] for b in https.bodies()] == [0, 1, 2, 3, 4, 5]
    assert https.bodies()[1]["event"]["score"] == pytest.approx(1.123456)
    assert not [p for p in _spool_files(spool_dir) if p.stem.isdigit()]


def test_a_tampered_spool_record_is_dropped_and_reported(https, tmp_path, certs):
    https.stop()
    spool_dir = tmp_path / "spool"
    config = {"type": "webhook", "name": "hook", "url": https.url("/in"),
              "ca_file": str(certs["ca"])}
    d1 = dispatcher(sinks_of(config), spool_dir)
    for n in range(3):
        d1.submit("impostor", {"verdict": "impostor", "seq": n})
    assert wait_for(lambda: d1.status()[0]["spooled"] == 3)
    d1.stop(1)
    first = sorted(p for p in (spool_dir / "hook").glob("*.rec") if p.stem.isdigit())[0]
    blob = bytearray(first.read_bytes())
    blob[-1] ^= 1
    first.write_bytes(bytes(blob))
    https.start()
    d2 = dispatcher(sinks_of(config), spool_dir)
    try:
        assert wait_for(lambda: len(https.requests) == 3, 20)
    finally:
        d2.stop(2)
    bodies = https.bodies()
    assert bodies[0]["kind"] == "spool_overflow" and bodies[0]["unreadable"] == 1
    assert [b["seq"] for b in bodies[1:]] == [1, 2]


def test_overflow_drops_the_oldest_and_is_reported_when_the_collector_returns(https, tmp_path,
                                                                              certs):
    https.stop()
    d = dispatcher(sinks_of({"type": "webhook", "name": "hook", "url": https.url("/in"),
                             "ca_file": str(certs["ca"])}), tmp_path / "spool", max_records=5)
    try:
        for n in range(12):
            d.submit("alert", {"verdict": "suspect", "seq": n})
        assert wait_for(lambda: d.status()[0]["spooled"] == 5 and d.status()[0]["failing"])
        assert len(_spool_files(tmp_path / "spool" / "hook")) == 5 + 1  # records + counters
        https.start()
        assert wait_for(lambda: len(https.requests) == 6, 20)
    finally:
        d.stop(2)
    bodies = https.bodies()
    assert bodies[0]["kind"] == "spool_overflow"
    assert bodies[0]["dropped"] == 7 and bodies[0]["max_records"] == 5
    assert bodies[0]["severity"] == "warning"
    assert [b["seq"] for b in bodies[1:]] == [7, 8, 9, 10, 11]


def test_a_full_disk_still_delivers_every_alert_and_says_so_once(https, tmp_path, certs,
                                                                 monkeypatch, caplog):
    """The spool's disk is full (its key was made before): alerts wait in memory, within the
    spool's bound, and go out in order when the collector is back, and at once while it is up;
    the full disk is logged once, not per alert."""
    https.stop()
    spool_dir = tmp_path / "spool"
    spooling.key_provider(spool_dir, use_keyring=False)()

    def full_disk(path, data, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(spooling, "write_private", full_disk)
    d = dispatcher(sinks_of({"type": "webhook", "name": "hook", "url": https.url("/in"),
                             "ca_file": str(certs["ca"])}), spool_dir, max_records=3)
    try:
        for n in range(5):
            d.submit("impostor", {"verdict": "impostor", "seq": n})
        assert wait_for(lambda: d.status()[0]["spooled"] == 3 and d.status()[0]["failing"])
        https.start()
        assert wait_for(lambda: len(https.requests) == 4, 20)
        d.submit("lock", {"reason": "impostor", "seq": 5})     # the collector is up
        assert wait_for(lambda: len(https.requests) == 5 and d.status()[0]["spooled"] == 0)
    finally:
        d.stop(2)
    bodies = https.bodies()
    assert bodies[0]["kind"] == "spool_overflow" and bodies[0]["dropped"] == 2  # the bound
    assert [(b["kind"], b["seq"]) for b in bodies[1:]] == [("impostor", 2), ("impostor", 3),
                                                           ("impostor", 4), ("lock", 5)]
    assert [p.name for p in _spool_files(spool_dir)] == [spooling.KEY_FILE]
    assert caplog.text.count("cannot write to the spool folder") == 1
    assert "No space left on device" in caplog.text and "free disk space" in caplog.text


def test_sinks_starting_together_share_one_spool_key(tmp_path):
    """Several sinks open their spools at once on a first start: none reads the key file while
    another is still writing it (and runs in memory all run); every spool gets the one key, so
    what each spooled is read back after a restart."""
    names = [f"sink{n}" for n in range(8)]
    for attempt in range(40):
        spool_dir = tmp_path / f"spool{attempt}"
        provide = spooling.key_provider(spool_dir, use_keyring=False)
        together = threading.Barrier(len(names))
        spools = {}

        def open_spool(name):
            together.wait()
            spools[name] = spooling.open_spool(spool_dir, name, provide, 10)

        threads = [threading.Thread(target=open_spool, args=(name,)) for name in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert all(spools[name].on_disk for name in names), attempt
        for name in names:
            spools[name].append({"kind": "impostor", "sink": name})
        restarted = spooling.key_provider(spool_dir, use_keyring=False)
        for name in names:
            again = spooling.open_spool(spool_dir, name, restarted, 10)
            assert again.peek()[1] == {"kind": "impostor", "sink": name}, attempt


def test_a_spool_key_write_that_fails_leaves_no_key_file(tmp_path, monkeypatch):
    """The disk fills while the first spool key is written: no key file is left (a torn one
    would be read as damaged at every later start); the next start makes one."""
    spool_dir = tmp_path / "spool"

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full_disk)
        with pytest.raises(OSError):
            spooling.key_provider(spool_dir, use_keyring=False)()
    assert _spool_files(spool_dir) == []
    key = spooling.key_provider(spool_dir, use_keyring=False)()
    assert (spool_dir / spooling.KEY_FILE).read_bytes() == key and len(key) == 32


def test_a_damaged_spool_key_file_is_set_aside_and_named(tmp_path, caplog):
    """A key file that is not a key (torn by a full disk in an older version, a disk fault) is
    moved aside, and an error names it and says what follows; a new key is made, the records
    sealed with the old one are dropped and counted, and alerts spool on disk again."""
    spool_dir = tmp_path / "spool"
    old = spooling.open_spool(spool_dir, "hook", spooling.key_provider(spool_dir,
                                                                       use_keyring=False), 10)
    old.append({"kind": "impostor", "seq": 1})
    old.append({"kind": "impostor", "seq": 2})
    key_file = spool_dir / spooling.KEY_FILE
    key_file.write_bytes(key_file.read_bytes()[:10])
    with caplog.at_level(logging.ERROR):
        again = spooling.open_spool(spool_dir, "hook", spooling.key_provider(spool_dir,
                                                                             use_keyring=False), 10)
    assert again.on_disk and len(key_file.read_bytes()) == 32
    aside = spool_dir / (spooling.KEY_FILE + ".damaged")
    assert len(aside.read_bytes()) == 10
    assert str(key_file) in caplog.text and aside.name in caplog.text
    assert "damaged" in caplog.text and "new key" in caplog.text
    assert again.peek() is None and again.take_losses() == (0, 2)
    again.append({"kind": "lock", "seq": 3})
    restarted = spooling.open_spool(spool_dir, "hook", spooling.key_provider(spool_dir,
                                                                             use_keyring=False), 10)
    assert restarted.peek()[1] == {"kind": "lock", "seq": 3}


def test_submit_never_blocks_and_a_full_queue_is_counted(https, tmp_path, certs):
    https.stop()
    sinks = sinks_of({"type": "webhook", "name": "hook", "url": https.url("/in"),
                      "ca_file": str(certs["ca"])})
    d = siem.SinkDispatcher(sinks, tmp_path / "spool",
                            spooling.key_provider(tmp_path / "spool", use_keyring=False),
                            host=HOST, user=USER, queue_size=50, min_backoff=0.05,
                            max_backoff=0.3, max_records=100)
    start = time.monotonic()
    for n in range(2000):  # the worker is not even running: the queue fills, submit returns
        d.submit("alert", {"verdict": "suspect", "seq": n})
    assert time.monotonic() - start < 2.0
    https.start()
    d.start()
    try:
        assert wait_for(lambda: len(https.requests) == 51, 20)
    finally:
        d.stop(2)
    bodies = https.bodies()
    assert bodies[0]["kind"] == "spool_overflow" and bodies[0]["dropped"] == 1950
    assert [b["seq"] for b in bodies[1:]] == list(range(50))


def test_privacy_canary_never_reaches_the_wire_or_the_logs(https, rsyslog_plain, tmp_path,
                                                           certs, caplog):
    caplog.set_level(logging.DEBUG)
    https.stop()  # start with the collector down, so failure paths log too
    sinks = sinks_of(
        {"type": "webhook", "name": "hook", "url": https.url("/in?sig=URLSECRET"),
         "token": "TOKENSECRET", "ca_file": str(certs["ca"])},
        {"type": "syslog", "name": "tcp", "host": "127.0.0.1", "port": rsyslog_plain.tcp})
    d = dispatcher(sinks, tmp_path / "spool")
    try:
        # typed text smuggled in every way the audit rules forbid
        d.submit("impostor", {"verdict": "impostor", "score": 2.5,
                              "note": CANARY,                      # not a whitelisted field
                              "reason": f"typed {CANARY}",          # not a short code
                              "rule": CANARY + "x" * 80,             # too long
                              "detail": {"text": CANARY},            # not a scalar
                              "recent_gaps_ms": [1.0, CANARY],       # not numbers
                              "time": CANARY, "Bad-Name": CANARY})    # reserved / bad names
        assert d.submit(f"kind {CANARY}", {}) is False
        assert d.submit("impostor", {f"{CANARY} name": 1}) is True  # only the bad field goes
        assert wait_for(lambda: d.status()[0]["failing"])
        https.start()
        assert wait_for(lambda: len(https.requests) == 2 and len(rsyslog_plain.cadence()) == 2, 20)
    finally:
        d.stop(2)
    wire = b"".join(https.raw) + rsyslog_plain.out.read_bytes()
    assert CANARY.encode() not in wire
    assert https.bodies()[0]["verdict"] == "impostor" and https.bodies()[0]["score"] == 2.5
    spooled = b"".join(p.read_bytes() for p in _spool_files(tmp_path / "spool"))
    assert CANARY.encode() not in spooled
    logs = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert CANARY not in logs
    assert "TOKENSECRET" not in logs and "URLSECRET" not in logs
    assert "cannot deliver" in caplog.text  # the failure was logged, redacted
    # the audit log path: a bad field is refused before anything is written or sent
    audit = siem.ForwardingAudit(AuditLog(tmp_path / "audit.jsonl"), d)
    with pytest.raises(ValueError) as info:
        audit.record("impostor", verdict="impostor", note=CANARY)
    assert CANARY not in str(info.value)


def test_forwarding_audit_sends_alert_worthy_records_only(https, tmp_path, certs):
    sinks = sinks_of({"type": "webhook", "name": "hook", "url": https.url("/in"),
                      "ca_file": str(certs["ca"])})
    d = dispatcher(sinks, tmp_path / "spool")
    audit = siem.ForwardingAudit(AuditLog(tmp_path / "logs" / "audit.jsonl"), d)
    try:
        audit.record("start", version="0.1.0", state="starting")
        audit.record("state", state="protecting")          # routine: audit log only
        audit.record("enrolment", state="training")        # routine: audit log only
        audit.record("state", state="degraded", reason="wayland")
        audit.record("enrolment", state="learning", reason="forgotten", files_removed=2)
        audit.record("impostor", verdict="impostor", score=3.0, trust=0.1, action="lock")
        audit.record("lock", reason="impostor", method="i3lock", locked=True, verified=True)
        audit.record("stop", state="stopped")
        assert wait_for(lambda: len(https.requests) == 6)
    finally:
        d.stop(2)
    assert [b["kind"] for b in https.bodies()] == ["start", "state", "enrolment", "impostor",
                                                   "lock", "stop"]
    assert https.bodies()[1]["state"] == "degraded" and https.bodies()[1]["severity"] == "warning"
    assert https.bodies()[2]["reason"] == "forgotten"
    assert len(audit.read()) == 8  # the audit log itself still has everything
    assert audit.path == tmp_path / "logs" / "audit.jsonl"


def test_an_unwritable_audit_log_still_forwards_the_alert(https, tmp_path, certs):
    sinks = sinks_of({"type": "webhook", "name": "hook", "url": https.url("/in"),
                      "ca_file": str(certs["ca"])})
    d = dispatcher(sinks, tmp_path / "spool")
    (tmp_path / "logs" / "audit.jsonl").mkdir(parents=True)     # a full disk, say
    audit = siem.ForwardingAudit(AuditLog(tmp_path / "logs" / "audit.jsonl"), d)
    try:
        audit.record("impostor", verdict="impostor", score=3.0, action="lock")
        assert wait_for(lambda: len(https.requests) == 1)
    finally:
        d.stop(2)
    assert https.bodies()[0]["kind"] == "impostor" and audit.write_failures == 1


def test_a_retried_event_keeps_its_id(https, tmp_path, certs):
    """At-least-once delivery: the collector may get an event twice (it took it, its answer
    was lost). Every delivery of one event carries one id, so the SIEM can drop the repeat."""
    https.status = 503
    sinks = sinks_of({"type": "webhook", "name": "hook", "url": https.url("/in"),
                      "ca_file": str(certs["ca"])})
    d = dispatcher(sinks, tmp_path / "spool")
    try:
        d.submit("impostor", {"verdict": "impostor"})
        d.submit("lock", {"reason": "impostor"})
        assert wait_for(lambda: len(https.requests) >= 2)
        https.status = 200
        assert wait_for(lambda: d.status()[0]["spooled"] == 0 and d.status()[0]["sent"] == 2)
    finally:
        d.stop(2)
    ids = {}
    for body in https.bodies():
        ids.setdefault(body["kind"], set()).add(body["event_id"])
    assert set(ids) == {"impostor", "lock"} and all(len(v) == 1 for v in ids.values())
    assert ids["impostor"] != ids["lock"]


def test_hec_setup_errors_are_retried_and_bad_events_are_counted(https, tmp_path, certs):
    """HEC answers 400 both for an event it cannot take (code 6: dropped, counted) and for its
    own setup (code 7, a wrong index: kept and retried until IT fixes it)."""
    https.status, https.reply = 400, b'{"text":"Incorrect index","code":7}'
    sinks = sinks_of({"type": "splunk_hec", "name": "hec", "url": https.url(), "token": "t-1",
                      "ca_file": str(certs["ca"])})
    d = dispatcher(sinks, tmp_path / "spool")
    try:
        d.submit("impostor", {"verdict": "impostor"})
        assert wait_for(lambda: len(https.requests) >= 3)
        assert d.status()[0]["spooled"] == 1 and d.status()[0]["failing"]
        https.reply = b'{"text":"Invalid data format","code":6}'
        assert wait_for(lambda: d.status()[0]["rejected"] == 1)
        assert d.status()[0]["spooled"] == 0
    finally:
        d.stop(2)


def test_stopping_with_a_collector_that_never_answers_keeps_the_queued_alerts(tmp_path, certs):
    """The collector takes the connection and then says nothing: the worker waits out its send
    timeout. The agent stops meanwhile; what was queued behind that send is in the spool."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    port = hole.getsockname()[1]
    spool_dir = tmp_path / "spool"
    sinks = sinks_of({"type": "webhook", "name": "hook", "url": f"https://127.0.0.1:{port}/in",
                      "ca_file": str(certs["ca"])})
    try:
        d = dispatcher(sinks, spool_dir)
        d.submit("impostor", {"verdict": "impostor", "seq": 0})
        time.sleep(0.5)               # the first is being sent ...
        for n in (1, 2):              # ... these two wait in the queue behind it
            d.submit("impostor", {"verdict": "impostor", "seq": n})
        d.stop(0.5)
        records = [p for p in _spool_files(spool_dir) if p.suffix == ".rec" and p.stem.isdigit()]
        assert len(records) == 3
    finally:
        hole.close()


# --------------------------------------------------------------------------- policy
def test_sink_policy_is_validated_bad_entries_skipped_and_tokens_never_shown():
    entries = [
        {"type": "syslog", "host": "siem.example.org", "transport": "tls"},
        {"type": "syslog", "host": "10.0.0.5", "transport": "sctp"},
        {"type": "syslog", "host": "10.0.0.5", "port": 70000},
        {"type": "splunk_hec", "url": "https://splunk.example.org:8088"},
        {"type": "webhook", "url": "http://hooks.example.org/x?sig=URLSECRET",
         "token": "TOKENSECRET"},
        {"type": "webhook", "url": "https://hooks.example.org/in", "token": "TOKEN SECRET"},
        {"type": "webhook", "url": "https://hooks.example.org/in", "tokne": "x"},
        {"type": "kafka"},
        "syslog://10.0.0.5",
        {"type": "splunk_hec", "url": "https://splunk.example.org:8088",
         "token": "TOKENSECRET", "index": "security"},
    ]
    s = merge([("/etc/cadence/policy.toml", {"sinks": entries, "heartbeat_minutes": 5}, True)])
    assert [c.type for c in s.policy.sinks] == ["syslog", "splunk_hec"]
    assert s.policy.sinks[0].port == 6514 and s.policy.sinks[0].facility == "authpriv"
    assert s.policy.heartbeat_minutes == 5 and "sinks" in s.managed
    errors = "\n".join(s.errors)
    assert len(s.errors) == 8 and all("this sink is skipped" in e for e in s.errors)
    for expected in ("sinks[1].transport = 'sctp' must be one of udp, tcp, tls",
                     "sinks[2].port = 70000", "sinks[3]: a splunk_hec sink needs token",
                     "sinks[4].url = 'http://hooks.example.org/x?<hidden>' must be an https://",
                     "sinks[5].token = <hidden>", "unknown key(s) 'tokne'",
                     "sinks[7].type = 'kafka'", "sinks[8] must be a table"):
        assert expected in errors
    assert "/etc/cadence/policy.toml" in s.errors[0]
    assert "SECRET" not in errors and "SECRET" not in repr(s.policy)
    for name in (".", ".."):                   # the sink's spool folder would be outside
        with pytest.raises(PolicyError, match="not a valid name"):
            validate("sinks", [{"type": "syslog", "name": name, "host": "h"}], "user")
    with pytest.raises(PolicyError, match="sinks must be a list of tables"):
        validate("sinks", {"type": "syslog"}, "user")
    with pytest.raises(PolicyError, match="heartbeat_minutes = 0 is outside"):
        validate("heartbeat_minutes", 0, "user")
    # the Windows registry holds the list as JSON text
    assert validate("sinks", json.dumps(entries[:1]), "HKLM")[0].host == "siem.example.org"
    assert Policy().sinks == () and Policy().heartbeat_minutes == 15


def test_a_sink_that_cannot_be_set_up_is_reported_and_the_others_still_work(tmp_path,
                                                                            monkeypatch):
    monkeypatch.delenv("CADENCE_NO_SUCH_TOKEN", raising=False)
    monkeypatch.setenv("CADENCE_TWO_LINES", "s3cr3t-TOKEN\nX-Injected: 1")
    token_file = tmp_path / "hec.token"
    token_file.write_text("FILETOKEN\n")
    s = merge([("policy", {"sinks": [
        {"type": "splunk_hec", "name": "a", "url": "https://127.0.0.1:1",
         "token_env": "CADENCE_NO_SUCH_TOKEN"},
        {"type": "syslog", "name": "b", "host": "127.0.0.1", "transport": "tls",
         "ca_file": str(tmp_path / "missing-ca.pem")},
        {"type": "splunk_hec", "name": "c", "url": "https://127.0.0.1:1",
         "token_file": str(token_file)},
        {"type": "webhook", "name": "d", "url": "https://127.0.0.1:1",
         "token_env": "CADENCE_TWO_LINES"},    # a header of its own: never sent, never shown
    ]}, True)])
    assert not s.errors
    sinks, problems = siem.sinks_from_policy(s.policy)
    assert [x.name for x in sinks] == ["c"] and sinks[0]._token == "FILETOKEN"
    assert "sink a: the environment variable named in token_env is not set" in problems[0]
    assert "missing-ca.pem" in problems[1]
    assert "sink d: the environment variable named in token_env does not hold one token" in \
        problems[2] and "s3cr3t" not in problems[2]
    assert "FILETOKEN" not in repr(sinks[0]) and "FILETOKEN" not in repr(s.policy)
    d, problems = siem.dispatcher_from_policy(s.policy, tmp_path / "spool")
    assert d is not None and len(d.channels) == 1 and len(problems) == 3
    assert siem.dispatcher_from_policy(Policy(), tmp_path / "spool") == (None, [])


def test_a_token_pasted_into_token_env_or_token_file_is_never_shown(monkeypatch):
    """The admin put the token itself where a variable's name or a file's path belongs: the
    problem (logged, shown by ``cadence status``) names the setting and what it must hold."""
    monkeypatch.delenv("PASTEDtokenQ7x9", raising=False)
    s = merge([("policy", {"sinks": [
        {"type": "splunk_hec", "name": "env", "url": "https://127.0.0.1:1",
         "token_env": "PASTEDtokenQ7x9"},
        {"type": "splunk_hec", "name": "file", "url": "https://127.0.0.1:1",
         "token_file": "/PASTED-5f0c2b9e-8d7a-4c1e"},
    ]}, True)])
    assert not s.errors
    sinks, problems = siem.sinks_from_policy(s.policy)
    assert sinks == [] and problems == [
        "sink env: the environment variable named in token_env is not set: token_env must hold "
        "the name of a variable set to the token, not the token; this sink is skipped",
        "sink file: cannot read the file named in token_file (No such file or directory): "
        "token_file must hold the path of a file that holds the token, not the token; this sink "
        "is skipped"]
    assert "PASTED" not in "\n".join(problems)


# --------------------------------------------------------------------------- the agent
def test_the_agent_forwards_its_start_degraded_and_stop_to_the_sinks(https, tmp_path, certs,
                                                                      monkeypatch):
    """The runtime wiring: policy sinks -> dispatcher; no display here, so the agent reports
    itself degraded, and the SIEM hears start, degraded and stop."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE"):
        monkeypatch.delenv(name, raising=False)
    from agent.runtime import Agent
    from agent.system.paths import Paths

    root = tmp_path / "home"
    paths = Paths(root / "data", root / "config", root / "logs", root / "run")
    settings = merge([("policy", {"sinks": [
        {"type": "webhook", "name": "hook", "url": https.url("/in"), "ca_file": str(certs["ca"])},
        {"type": "splunk_hec", "name": "hec", "url": https.url(), "token_env": "CADENCE_UNSET"},
    ]}, True)])
    monkeypatch.delenv("CADENCE_UNSET", raising=False)
    agent = Agent(paths, settings)
    agent.start()
    try:
        assert wait_for(lambda: len(https.requests) >= 3)
    finally:
        agent.stop()
    kinds = [(b["kind"], b.get("state"), b.get("reason")) for b in https.bodies()]
    assert kinds[:3] == [("start", "starting", None), ("policy_error", None, "sink-unusable"),
                         ("state", "degraded", "no-display")]
    assert kinds[-1] == ("stop", "stopped", None)
    assert (paths.data / "spool" / "hook").is_dir()
