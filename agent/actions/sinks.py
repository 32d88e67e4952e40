"""SIEM sinks: alerts and heartbeats to the collectors IT already runs.

Formats:

* **syslog** (RFC 5424) over UDP (RFC 5426), TCP with octet-counting framing (RFC 6587) or TLS
  (RFC 5425; the server certificate is verified against ``ca_file`` or the system store, and its
  name against the configured host)::

    <81>1 2025-03-04T10:15:02.123Z ws-0042 cadence 4711 impostor [cadence@32473 verdict="impostor"
    score="3.21" trust="0.08" action="lock" kind="impostor" user="alice" version="0.1.0"]
    Impostor suspected at the keyboard

  APP-NAME ``cadence``, MSGID the event's kind, facility ``authpriv`` unless configured, severity
  by kind (:data:`SEVERITY`), MSG a short fixed English phrase per kind (:data:`MESSAGES`).
* **webhook**: HTTPS POST of one JSON object per event (``Authorization: Bearer <token>`` if a
  token is configured).
* **splunk_hec**: HTTPS POST to the HTTP Event Collector (default path
  ``/services/collector/event``) of ``{"time", "host", "source", "sourcetype", ["index"],
  "event": {...}}`` with ``Authorization: Splunk <token>``.

What goes out is built only from an audit record's fields, re-checked with the audit log's own
rules (numbers, booleans, short lists of numbers, short codes in whitelisted fields): never a
key, never text. A field that fails the check is dropped and named in the log, never its value.
Tokens and webhook URL queries are never logged.

Delivery: :class:`SinkDispatcher.submit` never blocks; each sink has a worker thread with a
bounded in-memory queue that moves events into the sink's encrypted spool
(:mod:`agent.actions.spool`) and sends from the spool's head, in order, with retries and
backoff. A record leaves the spool only once the collector took it (TCP/TLS: written to a
connection that had not been closed by the collector; HTTPS: a 2xx answer), so delivery is
at-least-once, except over UDP, which is fire-and-forget by nature. Every event carries a random
``event_id``, the same on every retry and at every collector, so a SIEM can drop a repeat. An
event the collector refuses for good (HTTP 400/413/422; for HEC only its per-event codes) is
dropped, counted (``rejected``) and logged; retries back off with jitter, so a fleet does not
come back in step. A worker still sending when the agent stops leaves what is queued in the
spool.
"""

from __future__ import annotations

import getpass
import http.client
import json
import logging
import os
import queue
import random
import re
import select
import socket
import ssl
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from agent import __version__
from agent.actions import spool as spooling
from agent.actions.audit import _check as check_field
from agent.policy import FACILITIES, TOKEN, Policy, SinkConfig, redact_url

log = logging.getLogger(__name__)

APP_NAME = "cadence"
SD_ID = "cadence@32473"  # 32473: the IANA example enterprise number (RFC 5612)
HEC_PATH = "/services/collector/event"
TIMEOUT_S = 5.0
QUEUE_SIZE = 1000
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0

# RFC 5424 severities
EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG = range(8)
SEVERITY_NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

#: Severity by kind (``state`` to ``degraded`` is a warning; other kinds default to notice).
SEVERITY = {"impostor": ALERT, "injection": ALERT, "tamper": ALERT, "lock_failed": CRIT,
            "alert": WARNING, "policy_error": WARNING, "store_error": WARNING,
            "request_refused": WARNING, "enrolment": WARNING,
            "spool_overflow": WARNING, "lock": NOTICE, "start": NOTICE, "stop": NOTICE,
            "state": NOTICE, "heartbeat": INFO}

#: The fixed MSG (and JSON "message") per kind.
MESSAGES = {
    "impostor": "Impostor suspected at the keyboard",
    "injection": "Keystroke injection detected",
    "alert": "Unusual typing on this session",
    "tamper": "Stored profile failed its integrity check",
    "lock": "Session lock attempted",
    "lock_failed": "Could not lock the session",
    "policy_error": "Invalid Cadence policy setting",
    "store_error": "Profile store problem",
    "state": "Agent state changed",
    "start": "Cadence agent started",
    "stop": "Cadence agent stopped",
    "heartbeat": "Cadence agent heartbeat",
    "spool_overflow": "Alerts were dropped while the collector was unreachable",
    "request_refused": "A request to delete the profile was refused while the session was held",
    "enrolment": "The typing profile was deleted; the agent learns again",
}

#: Audit kinds that go to the SIEM (plus ``state`` changes to degraded or paused, and a profile
#: deleted: someone at the keyboard could wipe it to be enrolled in its place).
FORWARDED = frozenset({"impostor", "injection", "alert", "tamper", "lock", "lock_failed",
                       "policy_error", "store_error", "request_refused", "start", "stop"})
FORWARDED_STATES = frozenset({"degraded", "paused"})
FORWARDED_ENROLMENT = frozenset({"forgotten", "restart"})

_RESERVED = ("kind", "host", "user", "version")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@+/-]")


class SinkError(Exception):
    """A send failed for a reason that may pass (collector down, timeout): retry later."""


class RejectedError(SinkError):
    """The collector refused this event for good (HTTP 400/413/422): retrying cannot help."""


#: Splunk HEC answers 400 for a problem with the event (these codes) and for ones with the
#: collector's setup (a wrong index, indexer acknowledgement wanting a channel, ...), which
#: pass once IT fixes them: the event is kept and retried.
HEC_EVENT_CODES = frozenset({5, 6, 12, 13})


def forwarded(kind: str, fields: dict) -> bool:
    """Does this audit record go to the SIEM?"""
    return (kind in FORWARDED or (kind == "state" and fields.get("state") in FORWARDED_STATES)
            or (kind == "enrolment" and fields.get("reason") in FORWARDED_ENROLMENT))


def severity(kind: str, fields: dict) -> int:
    if kind == "state" and fields.get("state") == "degraded":
        return WARNING
    return SEVERITY.get(kind, NOTICE)


def safe_code(value: str, fallback: str = "unknown") -> str:
    """A host or user name as a short code the audit rules accept ('_' for anything else)."""
    code = _UNSAFE.sub("_", str(value or ""))[:64]
    return code or fallback


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in containers
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"


# -- events ---------------------------------------------------------------------------------------
def make_event(kind: str, fields: dict, *, host: str, user: str, version: str,
               when: float | None = None) -> dict:
    """The event to send: the audit rules applied to every field (failing ones are dropped and
    named in the log), plus host, user, agent version, the time (epoch seconds, ms) and an id
    (random, kept through the spool's retries: a collector can drop a delivery it already has)."""
    check_field("kind", kind)  # ValueError for a kind that is not a short code
    clean = {}
    for name, value in dict(fields).items():
        if name in ("time",) + _RESERVED:
            continue
        try:
            check_field(name, value)
        except ValueError as exc:
            log.warning("sink: a field was not sent: %s", exc)  # names the field, not its value
            continue
        clean[name] = list(value) if isinstance(value, tuple) else value
    when = time.time() if when is None else when
    return {"time": round(when, 3), "kind": kind, "host": host, "user": user,
            "version": version, "id": uuid.uuid4().hex, "fields": clean}


def iso_time(epoch: float) -> str:
    return (datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"))


def alert_json(event: dict) -> dict:
    """The flat JSON object of an event (webhook body, HEC ``event``)."""
    kind, fields = event["kind"], event["fields"]
    out = {"time": iso_time(event["time"]), "kind": kind,
           "severity": SEVERITY_NAMES[severity(kind, fields)],
           "message": MESSAGES.get(kind, "Cadence event"),
           "host": event["host"], "user": event["user"], "version": event["version"],
           "agent": APP_NAME}
    if event.get("id"):                      # spooled by an older version: none
        out["event_id"] = event["id"]
    out.update({k: v for k, v in fields.items() if k not in out})
    return out


def hec_json(event: dict, config: SinkConfig) -> dict:
    """The Splunk HTTP Event Collector shape."""
    out = {"time": event["time"], "host": event["host"], "source": config.source,
           "sourcetype": config.sourcetype}
    if config.index:
        out["index"] = config.index
    out["event"] = alert_json(event)
    return out


def _sd_value(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ",".join(_sd_value(v) for v in value)
    return str(value)


def sd_escape(value: str) -> str:
    """RFC 5424 PARAM-VALUE escaping: '"', '\\' and ']' get a backslash."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_message(event: dict, facility: int, procid: int | None = None) -> bytes:
    """One RFC 5424 message (no framing, no trailing newline)."""
    kind, fields = event["kind"], event["fields"]
    pri = facility * 8 + severity(kind, fields)
    params = dict(fields)
    params.update({"kind": kind, "user": event["user"], "version": event["version"],
                   "event_id": event.get("id")})
    parts = []
    for name, value in params.items():
        text = _sd_value(value)
        if text is None or len(name) > 32:  # PARAM-NAME is at most 32 characters
            continue
        parts.append(f'{name}="{sd_escape(text)}"')
    sd = f"[{SD_ID} {' '.join(parts)}]"
    host = safe_code(event["host"], "-")[:255]
    msgid = kind[:32]
    procid = os.getpid() if procid is None else procid
    line = (f"<{pri}>1 {iso_time(event['time'])} {host} {APP_NAME} {procid} {msgid} {sd} "
            f"{MESSAGES.get(kind, 'Cadence event')}")
    return line.encode("utf-8")


# -- sinks ----------------------------------------------------------------------------------------
def _tls_context(ca_file: str) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=ca_file or None)  # verifies cert and name
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or "unusable"
        raise ValueError(f"cannot use ca_file {ca_file} ({reason})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class SyslogSink:
    """RFC 5424 over UDP, TCP (octet counting) or TLS; one connection kept open."""

    def __init__(self, config: SinkConfig, timeout: float = TIMEOUT_S) -> None:
        self.config = config
        self.name = config.name
        self.facility = FACILITIES[config.facility]
        self.timeout = timeout
        self._context = _tls_context(config.ca_file) if config.transport == "tls" else None
        self._sock: socket.socket | None = None

    def describe(self) -> str:
        return f"syslog {self.config.transport}://{self.config.host}:{self.config.port}"

    def send(self, event: dict) -> None:
        message = syslog_message(event, self.facility)
        try:
            if self.config.transport == "udp":
                self._send_udp(message)
            else:
                self._send_stream(b"%d " % len(message) + message)
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise SinkError(f"server certificate not trusted ({exc.verify_message})") from None
        except OSError as exc:
            self.close()
            raise SinkError(exc.strerror or type(exc).__name__) from None

    def _send_udp(self, message: bytes) -> None:
        if self._sock is None:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.config.host, self.config.port, type=socket.SOCK_DGRAM)[0]
            self._sock = socket.socket(family, kind, proto)
            self._address = address
        self._sock.sendto(message, self._address)

    def _send_stream(self, frame: bytes) -> None:
        if self._sock is not None and self._peer_closed():
            self.close()  # the collector went away: a write now would vanish into the kernel
        if self._sock is None:
            sock = socket.create_connection((self.config.host, self.config.port),
                                            timeout=self.timeout)
            if self._context is not None:
                try:
                    sock = self._context.wrap_socket(sock, server_hostname=self.config.host)
                except BaseException:
                    sock.close()
                    raise
            self._sock = sock
        self._sock.sendall(frame)

    def _peer_closed(self) -> bool:
        """A syslog collector never writes to us: a readable socket means it closed (or, for
        TLS 1.3, sent session tickets, which reading consumes)."""
        sock = self._sock
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            sock.settimeout(0)
            try:
                return sock.recv(4096) == b""
            finally:
                sock.settimeout(self.timeout)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            try:
                sock.settimeout(self.timeout)
            except OSError:
                return True
            return False
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None


class HttpSink:
    """HTTPS JSON: a generic webhook (one JSON object per POST) or Splunk HEC."""

    def __init__(self, config: SinkConfig, token: str = "", timeout: float = TIMEOUT_S) -> None:
        self.config = config
        self.name = config.name
        self.timeout = timeout
        self._token = token
        parts = urlsplit(config.url)
        self._host, self._port = parts.hostname, parts.port or 443
        path = parts.path or ("/" if config.type == "webhook" else HEC_PATH)
        if config.type == "splunk_hec" and path == "/":
            path = HEC_PATH
        self._target = path + (f"?{parts.query}" if parts.query else "")
        self._context = _tls_context(config.ca_file)

    def __repr__(self) -> str:
        return f"HttpSink({self.describe()})"

    def describe(self) -> str:
        return f"{self.config.type} {redact_url(self.config.url)}"

    def send(self, event: dict) -> None:
        hec = self.config.type == "splunk_hec"
        body = json.dumps(hec_json(event, self.config) if hec else alert_json(event),
                          separators=(",", ":"), allow_nan=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": f"cadence/{__version__}"}
        if self._token:
            headers["Authorization"] = f"{'Splunk' if hec else 'Bearer'} {self._token}"
        conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                           context=self._context)
        try:
            conn.request("POST", self._target, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read(65536)
            status = response.status
        except ssl.SSLCertVerificationError as exc:
            raise SinkError(f"server certificate not trusted ({exc.verify_message})") from None
        except (OSError, http.client.HTTPException) as exc:
            raise SinkError(getattr(exc, "strerror", None) or type(exc).__name__) from None
        except Exception as exc:  # noqa: BLE001 - its message may hold a header: never shown
            raise SinkError(type(exc).__name__) from None
        finally:
            conn.close()
        if 200 <= status < 300:
            return
        if hec and status == 400:
            code = _hec_code(answer)
            if code not in HEC_EVENT_CODES:
                raise SinkError(f"HTTP 400, HEC code {code}: check the collector's setup")
            raise RejectedError(f"HTTP 400, HEC code {code}")
        if status in (400, 413, 422):
            raise RejectedError(f"HTTP {status}")
        raise SinkError(f"HTTP {status}")

    def close(self) -> None:
        pass


def _hec_code(answer: bytes) -> int | None:
    """The ``code`` of a HEC answer (``{"text": ..., "code": 7}``), if it has one."""
    try:
        code = json.loads(answer).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _token(config: SinkConfig) -> str:
    """The sink's token from the policy, an environment variable or a file (ValueError naming
    the setting to fix, never its value: an admin may have pasted the token itself there)."""
    if config.token:
        return config.token
    if config.token_env:
        value = os.environ.get(config.token_env, "").strip()
        if not value:
            raise ValueError("the environment variable named in token_env is not set: token_env "
                             "must hold the name of a variable set to the token, not the token")
        if not TOKEN.fullmatch(value):
            raise ValueError("the environment variable named in token_env does not hold one "
                             "token: set it to the token alone (printable ASCII, no spaces)")
        return value
    if config.token_file:
        try:
            value = Path(config.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError("cannot read the file named in token_file "
                             f"({getattr(exc, 'strerror', None) or type(exc).__name__}): "
                             "token_file must hold the path of a file that holds the token, not "
                             "the token") from None
        if not TOKEN.fullmatch(value):
            raise ValueError("the file named in token_file does not hold one token: put the "
                             "token alone in it (printable ASCII, no spaces)")
        return value
    return ""


def make_sink(config: SinkConfig):
    if config.type == "syslog":
        return SyslogSink(config)
    return HttpSink(config, _token(config))


def sinks_from_policy(policy: Policy) -> tuple[list, list[str]]:
    """(usable sinks, problems): a sink that cannot be set up (token missing, CA file unreadable)
    is reported and skipped; the others still work."""
    sinks, problems = [], []
    for config in policy.sinks:
        try:
            sinks.append(make_sink(config))
        except (ValueError, OSError, ssl.SSLError) as exc:
            detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            if isinstance(exc, OSError) and getattr(exc, "filename", None):
                detail = f"{exc.filename}: {detail}"
            problems.append(f"sink {config.name}: {detail}; this sink is skipped")
    return sinks, problems


# -- delivery -------------------------------------------------------------------------------------
_STOP = object()


class _Channel:
    """One sink's worker: queue -> spool -> collector, in order, with backoff."""

    def __init__(self, sink, dispatcher: "SinkDispatcher") -> None:
        self.sink = sink
        self.name = sink.name
        self.d = dispatcher
        self.queue: queue.Queue = queue.Queue(maxsize=dispatcher.queue_size)
        self.spool: spooling.Spool | None = None
        self._spool_lock = threading.Lock()   # the spool is used by the worker and by stop()
        self._lost = 0
        self._lost_lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = 0.0
        self.failing = False
        self.depth = 0
        self.sent = 0
        self.rejected = 0
        self.thread = threading.Thread(target=self._run, name=f"cadence-sink-{self.name}",
                                       daemon=True)

    def offer(self, event: dict) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            with self._lost_lock:
                self._lost += 1

    def stop(self, deadline: float) -> None:
        self._deadline = deadline
        self._stop.set()
        try:
            self.queue.put_nowait(_STOP)
        except queue.Full:
            pass  # the worker sees the flag within its next wait

    def _run(self) -> None:
        self.spool = spooling.open_spool(self.d.spool_dir, self.name, self.d.key_provider,
                                         self.d.max_records)
        backoff, next_try = self.d.min_backoff, 0.0
        while not self._stop.is_set():
            try:
                pending = len(self.spool) or self.spool.dropped or self.spool.unreadable
                wait = max(0.01, next_try - time.monotonic()) if pending else 1.0
                try:
                    item = self.queue.get(timeout=wait)
                except queue.Empty:
                    item = None
                if item is not None and item is not _STOP:
                    with self._spool_lock:
                        self.spool.append(item)
                self._drain()
                if self._stop.is_set() or time.monotonic() < next_try:
                    continue
                if self._flush():
                    backoff, next_try = self.d.min_backoff, 0.0
                else:   # jittered: a fleet's agents do not all come back at the same moment
                    next_try = time.monotonic() + backoff * random.uniform(0.5, 1.0)
                    backoff = min(backoff * 2, self.d.max_backoff)
            except Exception:  # noqa: BLE001 - the worker must not die
                log.exception("sink %s: worker error", self.name)
                time.sleep(self.d.min_backoff)
        try:  # stopping: everything queued goes to the spool; one last try to send it
            self._drain()
            if time.monotonic() < self._deadline:
                self._flush()
        except Exception:  # noqa: BLE001
            log.exception("sink %s: error while stopping", self.name)
        finally:
            self.sink.close()

    def _drain(self) -> None:
        with self._spool_lock:
            while True:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    self.spool.append(item)
            with self._lost_lock:
                lost, self._lost = self._lost, 0
            self.spool.note_dropped(lost)
            self.depth = len(self.spool)

    def drain_stuck(self) -> None:
        """The worker is still sending when the agent stops (a collector that takes the
        connection but never answers): move what is queued into the spool from here, or it
        would be lost with the process. The worker holds the spool only between sends."""
        if self.spool is not None:
            self._drain()

    def _flush(self) -> bool:
        """Send the losses notice, then the spool from its head. True when all went out."""
        try:
            while True:
                with self._spool_lock:
                    head = self.spool.peek()  # first: it counts records that fail to decrypt
                    dropped, unreadable = self.spool.take_losses()
                if dropped or unreadable:  # the gap is reported where it is, in order
                    notice = self.d.event("spool_overflow", {
                        "dropped": dropped, "unreadable": unreadable,
                        "max_records": self.spool.max_records})
                    try:
                        self.sink.send(notice)
                    except RejectedError as exc:
                        log.error("sink %s (%s): the collector rejected the spool_overflow "
                                  "event (%s)", self.name, self.sink.describe(), exc)
                    with self._spool_lock:
                        self.spool.reported(dropped, unreadable)
                if head is None:
                    break
                if self._stop.is_set() and time.monotonic() > self._deadline:
                    return False
                seq, event = head
                try:
                    self.sink.send(event)
                    self.sent += 1
                except RejectedError as exc:
                    self.rejected += 1
                    log.error("sink %s (%s): the collector rejected a %s event (%s); dropped "
                              "(%d so far)", self.name, self.sink.describe(), event.get("kind"),
                              exc, self.rejected)
                with self._spool_lock:
                    self.spool.remove(seq)
                self._drain()
        except SinkError as exc:
            if not self.failing:
                log.warning("sink %s (%s): cannot deliver (%s); alerts wait in the spool and "
                            "are retried", self.name, self.sink.describe(), exc)
            self.failing = True
            self.depth = len(self.spool)
            return False
        if self.failing:
            log.info("sink %s (%s): delivering again", self.name, self.sink.describe())
        self.failing = False
        self.depth = len(self.spool)
        return True


class SinkDispatcher:
    """Sends audit events to SIEM sinks without ever blocking the caller.

    ``sinks``: objects with ``name``, ``send(event)``, ``describe()``, ``close()`` (see
    :func:`sinks_from_policy`). ``spool_dir``: the agent's spool folder (a subfolder per sink).
    ``key_provider``: returns the 32-byte spool key (default: :func:`spool.key_provider`).
    """

    def __init__(self, sinks, spool_dir, key_provider=None, host: str | None = None,
                 user: str | None = None, version: str = __version__, *,
                 max_records: int = 10000, heartbeat_s: float = 900.0,
                 queue_size: int = QUEUE_SIZE, min_backoff: float = MIN_BACKOFF_S,
                 max_backoff: float = MAX_BACKOFF_S) -> None:
        self.spool_dir = Path(spool_dir)
        self.key_provider = key_provider or spooling.key_provider(self.spool_dir)
        self.host = safe_code(host or socket.gethostname())
        self.user = safe_code(user or os_user())
        self.version = safe_code(version)
        self.max_records = int(max_records)
        self.heartbeat_s = float(heartbeat_s)
        self.queue_size = int(queue_size)
        self.min_backoff = float(min_backoff)
        self.max_backoff = max(float(max_backoff), self.min_backoff)
        self.channels = [_Channel(sink, self) for sink in sinks]
        self._last_heartbeat: float | None = None
        self._started = False

    def event(self, kind: str, fields: dict) -> dict:
        return make_event(kind, fields, host=self.host, user=self.user, version=self.version)

    def start(self) -> None:
        if not self._started:
            self._started = True
            for channel in self.channels:
                channel.thread.start()

    def submit(self, kind: str, fields: dict | None = None) -> bool:
        """Queue one event for every sink; never blocks, never raises. False if refused."""
        try:
            event = self.event(kind, fields or {})
        except ValueError as exc:
            log.warning("sink: an event was not sent: %s", exc)
            return False
        except Exception:  # noqa: BLE001 - never break the pipeline
            log.exception("sink: cannot build an event")
            return False
        for channel in self.channels:
            if kind != "heartbeat" or not channel.failing:
                channel.offer(event)   # a heartbeat kept for a collector that is down would
        return True                    # only push alerts out of its bounded spool

    def heartbeat(self, status_fields: dict | None = None) -> bool:
        fields = dict(status_fields or {})
        fields.setdefault("interval_s", int(self.heartbeat_s))
        fields.setdefault("spooled", max((c.depth for c in self.channels), default=0))
        return self.submit("heartbeat", fields)

    def maybe_heartbeat(self, now: float, status_fields: dict | None = None) -> bool:
        """A heartbeat if ``heartbeat_s`` passed since the last (``now``: time.monotonic())."""
        if self._last_heartbeat is None:
            self._last_heartbeat = now
            return False
        if now - self._last_heartbeat < self.heartbeat_s:
            return False
        self._last_heartbeat = now
        return self.heartbeat(status_fields)

    def stop(self, timeout: float = 5.0) -> None:
        """Queued events go to the spools; one last delivery try within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for channel in self.channels:
            channel.stop(deadline)
        for channel in self.channels:
            if channel.thread.is_alive():
                channel.thread.join(max(0.0, deadline - time.monotonic()) + 0.5)
            if channel.thread.is_alive():
                channel.drain_stuck()

    def status(self) -> list[dict]:
        """Per sink: name, pending (spooled) events, delivering or not; no destinations."""
        return [{"name": c.name, "spooled": c.depth, "failing": c.failing, "sent": c.sent,
                 "rejected": c.rejected} for c in self.channels]


def dispatcher_from_policy(policy: Policy, spool_dir, **kwargs) -> tuple[SinkDispatcher | None,
                                                                          list[str]]:
    """(dispatcher or None when no sink is usable, problems to report). Not started."""
    if not policy.sinks:
        return None, []
    sinks, problems = sinks_from_policy(policy)
    if not sinks:
        return None, problems
    return SinkDispatcher(sinks, spool_dir, max_records=policy.spool_max_records,
                          heartbeat_s=60.0 * policy.heartbeat_minutes, **kwargs), problems


class ForwardingAudit:
    """The audit log, plus: every alert-worthy record also goes to the SIEM dispatcher.

    Wraps :class:`~agent.actions.audit.AuditLog` (all else is delegated) so records the shell
    writes directly (start, stop, tamper, lock, policy errors) and the pipeline's Audit effects
    are forwarded alike, from the record the audit log validated."""

    def __init__(self, audit, dispatcher: SinkDispatcher) -> None:
        self._audit = audit
        self._dispatcher = dispatcher

    def record(self, kind: str, **fields) -> dict:
        entry = self._audit.record(kind, **fields)
        if forwarded(kind, fields):
            self._dispatcher.submit(kind, {k: v for k, v in entry.items()
                                           if k not in ("time", "kind")})
        return entry

    def __getattr__(self, name):
        return getattr(self._audit, name)
