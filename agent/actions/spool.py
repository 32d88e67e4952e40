"""The sink spool: a bounded, encrypted, ordered on-disk queue of events for one SIEM sink.

Every event a sink is to send is first put in its spool and leaves it only once the collector
took it, so alerts wait here while a collector is down, survive an agent restart and go out in
the order they happened. The spool holds at most ``max_records`` events; beyond that the oldest
are dropped and *counted*, and the count is reported (a ``spool_overflow`` event) when the
collector is back. Records that no longer decrypt (a lost key, a modified file) are dropped and
counted the same way. A record the disk refuses (full, made read-only) waits in memory instead,
within the same bound, and is sent all the same; the failure is logged once, not per record, and
such records do not survive a restart.

Layout: ``<spool dir>/<sink name>/`` (0700) holds one file per record, ``<seq>.rec`` (0600, seq
a zero-padded counter), and ``meta.rec`` (the drop counters). Each file is::

    b"CDSP" | format version (1 byte) | nonce (12 bytes) | AES-256-GCM(JSON)

with the header, the sink name and the record's sequence number as associated data, so a record
moved, renamed or copied into another sink's spool fails authentication.

The key: :func:`key_provider` keeps a 256-bit key in the OS keyring (service
``cadence-agent-spool``) like the profile store does, or, without a usable keyring, in
``spool.key`` (0600) in the spool folder. A key file once made is kept (records in the spool were
sealed with it); it is written whole or not at all. One that is not a key (a disk fault, an
older version torn by a full disk) is moved aside to ``spool.key.damaged`` and a new key made,
with an error that names both: the records sealed with the old one no longer decrypt, and are
dropped and counted as above. If the keyring is locked while records wait on disk, the spool
runs in memory for this run and leaves those records for a later start.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.store import decode_key, os_user
from agent.system.files import write_private
from agent.system.paths import private_dir

log = logging.getLogger(__name__)

SERVICE = "cadence-agent-spool"
KEY_FILE = "spool.key"
MAGIC = b"CDSP"
FORMAT_VERSION = 1
HEADER = MAGIC + bytes([FORMAT_VERSION])
NONCE_LEN = 12
KEY_LEN = 32
MAX_RECORD_BYTES = 64 * 1024
META = "meta.rec"
_META_SEQ = 0
_BINARY = getattr(os, "O_BINARY", 0)

KeyProvider = Callable[[], bytes]
_KEY_LOCK = threading.Lock()  # one spool key per process, however many sinks ask at once


class SpoolKeyUnavailable(Exception):
    """The spool key is in the OS keyring, which cannot be reached right now."""


# -- keys -----------------------------------------------------------------------------------------
def key_provider(directory: Path, *, use_keyring: bool = True, service: str = SERVICE,
                 username: str | None = None) -> KeyProvider:
    """A callable giving the spool key (see the module docstring); it never logs key bytes."""
    directory = Path(directory)

    def provide() -> bytes:
        # Sinks start together: one at a time, none reads a key file another has half
        # written, nor replaces a keyring key another sink has sealed records with.
        with _KEY_LOCK:
            return obtain()

    def obtain() -> bytes:
        path = directory / KEY_FILE
        material = _read_key_file(path)
        if material is not None:
            return material
        if use_keyring and _keyring_backend_ok():
            import keyring
            user = username or os_user()
            try:
                value = keyring.get_password(service, user)
            except Exception as exc:  # locked, D-Bus gone, ...
                if _has_records(directory):
                    raise SpoolKeyUnavailable(type(exc).__name__) from None
                value = None
            else:
                material = decode_key(value) if value is not None else None
                if material is not None:
                    return material
                material = AESGCM.generate_key(bit_length=256)
                encoded = base64.b64encode(material).decode("ascii")
                try:
                    keyring.set_password(service, user, encoded)
                    if keyring.get_password(service, user) == encoded:
                        return material
                except Exception as exc:  # noqa: BLE001
                    log.warning("the OS keyring did not keep the spool key (%s)",
                                type(exc).__name__)
        if use_keyring:
            log.warning("no usable OS keyring for the SIEM spool key; using a key file readable "
                        "only by you (%s), which is weaker protection", path)
        private_dir(directory)
        material = AESGCM.generate_key(bit_length=256)
        try:
            write_private(path, material, exclusive=True)
        except FileExistsError:  # another process made it first
            material = _read_key_file(path)
            if material is None:
                raise OSError("the spool key file is damaged") from None
        return material

    return provide


def _keyring_backend_ok() -> bool:
    try:
        import keyring
        from keyring.backends import fail, null
        return not isinstance(keyring.get_keyring(), (fail.Keyring, null.Keyring))
    except Exception:  # noqa: BLE001
        return False


def _read_key_file(path: Path) -> bytes | None:
    """The key in ``path``; None if there is none, or if the file is not a key (then moved
    aside, and logged with what follows: see the module docstring)."""
    try:
        fd = os.open(path, os.O_RDONLY | _BINARY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        if os.name == "posix" and os.fstat(f.fileno()).st_mode & 0o077:
            os.fchmod(f.fileno(), 0o600)
        material = f.read(KEY_LEN + 1)
    if len(material) == KEY_LEN:
        return material
    aside = path.with_name(path.name + ".damaged")
    os.replace(path, aside)
    log.error("the SIEM spool key file %s is damaged (%s bytes, not %d); it is kept as %s and "
              "a new key is made: alerts spooled with the old key cannot be read; they are "
              "dropped and reported to the SIEM as unreadable (spool_overflow)", path,
              len(material) if len(material) <= KEY_LEN else "more", KEY_LEN, aside.name)
    return None


def _has_records(directory: Path) -> bool:
    try:
        return any(p.is_dir() and any(p.glob("*.rec")) for p in directory.iterdir())
    except OSError:
        return False


# -- the spool ------------------------------------------------------------------------------------
class Spool:
    """One sink's spool. Not thread-safe: its sink's worker thread owns it.

    ``key`` None (no key obtainable) keeps the records in memory only, still bounded; so does a
    record the disk refuses.
    """

    def __init__(self, directory: Path, name: str, key: bytes | None,
                 max_records: int = 10000) -> None:
        self.directory = Path(directory)
        self.name = name
        self.max_records = max(1, int(max_records))
        self._aead = AESGCM(key) if key is not None else None
        self._seqs: deque[int] = deque()
        self._memory: dict[int, dict] = {}
        self._next = 1
        self.dropped = 0       # oldest records dropped for the bound (or lost before spooling)
        self.unreadable = 0    # records that failed to decrypt or parse
        self.disk_failing = False  # the last write to the spool folder failed
        if self._aead is not None:
            self._open()

    def __repr__(self) -> str:
        return f"Spool({self.name!r}, {len(self)} records)"

    @property
    def on_disk(self) -> bool:
        return self._aead is not None

    def __len__(self) -> int:
        return len(self._seqs)

    # -- public API
    def append(self, event: dict) -> None:
        """Add an event at the end; drops (and counts) the oldest beyond the bound."""
        data = json.dumps(event, separators=(",", ":"), allow_nan=False).encode("utf-8")
        if len(data) > MAX_RECORD_BYTES:
            log.error("sink %s: an event of %d bytes is too large for the spool; dropped",
                      self.name, len(data))
            self.note_dropped(1)
            return
        seq = self._next
        self._next += 1
        if self._aead is None or not self._write(self._path(seq), self._seal(seq, data)):
            self._memory[seq] = event
        self._seqs.append(seq)
        excess = len(self._seqs) - self.max_records
        for _ in range(max(0, excess)):
            self._discard(self._seqs.popleft())
        if excess > 0:
            self.note_dropped(excess)

    def peek(self) -> tuple[int, dict] | None:
        """The oldest readable record as (seq, event); unreadable ones are dropped and counted."""
        while self._seqs:
            seq = self._seqs[0]
            if seq in self._memory:
                return seq, self._memory[seq]
            event = self._load(seq)
            if event is not None:
                return seq, event
            self._seqs.popleft()
            self._discard(seq)
            self.unreadable += 1
            self._save_meta()
        return None

    def remove(self, seq: int) -> None:
        """Forget a record the collector took (the oldest)."""
        if self._seqs and self._seqs[0] == seq:
            self._seqs.popleft()
        else:
            try:
                self._seqs.remove(seq)
            except ValueError:
                return
        self._discard(seq)

    def note_dropped(self, count: int) -> None:
        if count > 0:
            self.dropped += count
            self._save_meta()

    def take_losses(self) -> tuple[int, int]:
        """(dropped, unreadable) not yet reported; call :meth:`reported` once sent."""
        return self.dropped, self.unreadable

    def reported(self, dropped: int, unreadable: int) -> None:
        self.dropped = max(0, self.dropped - dropped)
        self.unreadable = max(0, self.unreadable - unreadable)
        self._save_meta()

    # -- internals
    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:016d}.rec"

    def _aad(self, seq: int) -> bytes:
        return HEADER + self.name.encode("utf-8") + seq.to_bytes(8, "big")

    def _seal(self, seq: int, data: bytes) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        return HEADER + nonce + self._aead.encrypt(nonce, data, self._aad(seq))

    def _unseal(self, seq: int, blob: bytes) -> bytes | None:
        if len(blob) < len(HEADER) + NONCE_LEN + 16 or blob[:len(HEADER)] != HEADER:
            return None
        nonce = blob[len(HEADER):len(HEADER) + NONCE_LEN]
        try:
            return self._aead.decrypt(nonce, blob[len(HEADER) + NONCE_LEN:], self._aad(seq))
        except InvalidTag:
            return None

    def _open(self) -> None:
        private_dir(self.directory.parent)
        private_dir(self.directory)
        seqs = []
        for p in self.directory.iterdir():
            if p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)  # a write cut short; never renamed, never counted
            elif p.suffix == ".rec" and p.stem.isdigit() and p.name != META:
                seqs.append(int(p.stem))
        seqs.sort()
        self._seqs = deque(seqs)
        self._next = (seqs[-1] + 1) if seqs else 1
        self._load_meta()
        excess = len(self._seqs) - self.max_records  # the bound was lowered by policy
        for _ in range(max(0, excess)):
            self._discard(self._seqs.popleft())
        if excess > 0:
            self.note_dropped(excess)

    def _write(self, path: Path, blob: bytes) -> bool:
        """Write one spool file; False if the disk refused it (logged once until one works)."""
        try:
            write_private(path, blob)
        except OSError as exc:
            if not self.disk_failing:
                log.error("sink %s: cannot write to the spool folder %s (%s); alerts wait in "
                          "memory (lost if the agent stops before they are sent): free disk "
                          "space or fix the folder's permissions", self.name, self.directory,
                          exc.strerror or type(exc).__name__)
            self.disk_failing = True
            return False
        if self.disk_failing:
            log.warning("sink %s: the spool folder can be written again", self.name)
            self.disk_failing = False
        return True

    def _load(self, seq: int) -> dict | None:
        try:
            blob = self._path(seq).read_bytes()
        except FileNotFoundError:
            return None
        data = self._unseal(seq, blob)
        if data is None:
            log.warning("sink %s: a spooled record failed authentication; dropped", self.name)
            return None
        try:
            event = json.loads(data)
        except ValueError:
            return None
        return event if isinstance(event, dict) else None

    def _discard(self, seq: int) -> None:
        self._memory.pop(seq, None)
        if self._aead is not None:
            try:
                self._path(seq).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("sink %s: cannot remove a spooled record (%s)", self.name,
                          exc.strerror or type(exc).__name__)

    def _load_meta(self) -> None:
        path = self.directory / META
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return
        data = self._unseal(_META_SEQ, blob)
        try:
            meta = json.loads(data) if data is not None else None
            self.dropped = max(0, int(meta["dropped"]))
            self.unreadable = max(0, int(meta["unreadable"]))
        except (ValueError, TypeError, KeyError):
            log.warning("sink %s: the spool's counters are unreadable; losses may be "
                        "under-reported", self.name)
            self.unreadable += 1

    def _save_meta(self) -> None:
        if self._aead is None:
            return
        data = json.dumps({"dropped": self.dropped, "unreadable": self.unreadable}).encode()
        self._write(self.directory / META, self._seal(_META_SEQ, data))


def open_spool(spool_dir: Path, name: str, provider: KeyProvider | None,
               max_records: int) -> Spool:
    """The spool of sink ``name`` under ``spool_dir``; in memory if no key can be had."""
    key = None
    if provider is not None:
        try:
            key = provider()
        except SpoolKeyUnavailable as exc:
            log.error("sink %s: the spool key is in the OS keyring, which is locked or "
                      "unreachable (%s); alerts wait in memory only for now", name, exc)
        except Exception as exc:  # noqa: BLE001 - never stop alerting for a spool problem
            log.error("sink %s: no spool key (%s); alerts wait in memory only", name,
                      type(exc).__name__)
    try:
        return Spool(Path(spool_dir) / name, name, key, max_records)
    except OSError as exc:
        log.error("sink %s: cannot open the spool folder (%s); alerts wait in memory only",
                  name, exc.strerror or type(exc).__name__)
        return Spool(Path(spool_dir) / name, name, None, max_records)
