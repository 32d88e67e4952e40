"""The encrypted profile store: AES-GCM at rest, the key in the OS keyring.

File layout (``profile.enc``)::

    header (6 bytes)   b"CDNC" | format version (1 byte) | key source (b"K" keyring, b"F" key file)
    nonce (12 bytes)   random per write
    ciphertext + tag   AES-256-GCM of Profile.to_json(), the header as associated data

The header is authenticated, so changing any of its bytes (version, key source) fails
authentication exactly like a flipped ciphertext byte does.

The 256-bit key lives in the OS keyring (service ``cadence-agent``, username = the OS user).
Without a usable keyring (no backend, keyring locked or not running, a backend that does not keep
what it is given) the key goes to ``profile.key`` in the data directory, readable only by the
user: weaker, and :attr:`ProfileStore.key_protection` / :attr:`ProfileStore.key_protection_note`
say so plainly for ``cadence status``. The next save with a usable keyring moves the profile onto
a keyring key and deletes the key file (after writing the profile: a crash between the two
leaves a keyring profile next to a stale key file, which is never used to judge that profile).

A stored profile that does not decrypt, authenticate or validate is never used: it is moved aside
(``profile.enc.tampered-<n>``) and :class:`TamperError` is raised, which the agent turns into a
``tamper`` alert and re-enrolment. A missing profile is not tamper (``load()`` returns None). A
profile whose key is in a keyring that is locked or unreachable right now is not judged at all:
:class:`KeyUnavailableError`, the file stays where it is.

A profile, key file or data folder Cadence cannot read or write (say, left owned by root by a
``sudo cadence``) is a :class:`StoreError` naming the file and what to do, never a crash.

Nothing here puts profile content or key bytes into exceptions or logs.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import keyring
import keyring.errors
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.model.profile import Profile, ProfileError
from agent.system.files import fsync_directory, write_private

log = logging.getLogger(__name__)

APP_NAME = "cadence"
SERVICE = "cadence-agent"
PROFILE_NAME = "profile.enc"
KEY_NAME = "profile.key"

MAGIC = b"CDNC"
FORMAT_VERSION = 1
SOURCE_KEYRING = b"K"
SOURCE_FILE = b"F"
HEADER_LEN = len(MAGIC) + 2
REPROBE_S = 60.0   # with nothing stored, how long the keyring's answer stands for status
NONCE_LEN = 12
TAG_LEN = 16
KEY_LEN = 32

KEYRING = "keyring"
KEY_FILE = "key-file"

_SOURCES = {SOURCE_KEYRING: KEYRING, SOURCE_FILE: KEY_FILE}
_ASIDE = re.compile(re.escape(PROFILE_NAME) + r"\.tampered-(\d+)$")
_BINARY = getattr(os, "O_BINARY", 0)


class StoreError(Exception):
    """The profile store cannot do what was asked; the message says why and what to do."""


class TamperError(StoreError):
    """The stored profile failed decryption, authentication or validation and was moved aside.

    ``reason`` is a short code (``truncated``, ``header``, ``version``, ``key-missing``,
    ``authentication``, ``invalid-profile``); ``moved_to`` is where the file now is.
    """

    def __init__(self, reason: str, detail: str, moved_to: Path | None) -> None:
        self.reason = reason
        self.moved_to = moved_to
        where = f"moved aside to {moved_to.name}" if moved_to else "could not be moved aside"
        super().__init__(f"the stored profile {detail}; it was {where} and will not be used. "
                         "This may be tampering: keep the moved-aside copy for investigation "
                         "(cadence forget deletes it); Cadence learns the typing again by itself")


class KeyUnavailableError(StoreError):
    """The profile's key is in the OS keyring, which cannot be reached right now."""


@dataclass(frozen=True)
class _Key:
    material: bytes
    source: bytes

    def __repr__(self) -> str:  # never show key bytes, even in a traceback's locals
        return f"_Key(source={self.source!r})"


def default_directory() -> Path:
    """The per-user data directory for Cadence (platformdirs, not roaming)."""
    import platformdirs
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False, roaming=False))


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name and no passwd entry (containers)
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "default"


class ProfileStore:
    """The user's profile, encrypted at rest; see the module docstring for the format.

    ``directory`` is a folder for Cadence's own use (default: the platformdirs user data dir);
    it is created 0700 and tightened to 0700 if it is wider. ``service``/``username`` name the
    keyring entry (default username: the OS user).
    """

    def __init__(self, directory: Path | None = None, service: str = SERVICE,
                 username: str | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_directory()
        self.service = service
        self.username = username or os_user()
        self._protection: str | None = None
        self._probed_at: float | None = None   # when the keyring was asked, nothing stored
        self._warned = False

    # -- paths ---------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.directory / PROFILE_NAME

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_NAME

    def tampered_copies(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir()
                 if (m := _ASIDE.match(p.name))]
        return [p for _, p in sorted(found)]

    # -- public API ----------------------------------------------------------------------------

    def save(self, profile: Profile) -> None:
        """Encrypt and write ``profile`` atomically (0600), creating the key if needed."""
        plaintext = profile.to_json()
        self._ensure_directory()
        key = self._key_for_writing()
        header = _header(key.source)
        nonce = os.urandom(NONCE_LEN)
        blob = header + nonce + AESGCM(key.material).encrypt(nonce, plaintext, header)
        _write(self.path, blob)
        self._protection = _SOURCES[key.source]
        if key.source == SOURCE_KEYRING and self.key_path.exists():
            # The profile is now under the keyring key: the weaker key file is no longer needed.
            # Deleted only now, as the old profile needs it until the new one is written; a
            # crash right here is handled by _key_for_reading.
            _unlink(self.key_path)
            log.info("the profile key is now held in the OS keyring; removed the key file")

    def load(self) -> Profile | None:
        """The stored profile, or None if there is none.

        Raises :class:`TamperError` (file moved aside) if it fails decryption, authentication
        or validation, and :class:`KeyUnavailableError` (file left alone) if its key is in a
        keyring that is locked or unreachable right now.
        """
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            self._protection = None
            return None
        except OSError as exc:
            raise _not_usable(self.path, "read the file", exc) from None
        if len(blob) < HEADER_LEN + NONCE_LEN + TAG_LEN:
            self._tamper("truncated", "is truncated")
        header = blob[:HEADER_LEN]
        if header[:len(MAGIC)] != MAGIC:
            self._tamper("header", "does not start with a Cadence header")
        if header[len(MAGIC)] != FORMAT_VERSION:
            self._tamper("version", f"has an unknown header version {header[len(MAGIC)]}")
        source = header[len(MAGIC) + 1:]
        if source not in _SOURCES:
            self._tamper("header", "names an unknown key source")
        self._protection = _SOURCES[source]
        plaintext = _decrypt(self._key_for_reading(source, blob).material, blob, header)
        if plaintext is None:
            self._tamper("authentication", "failed authentication (wrong key or modified file)")
        try:
            profile = Profile.from_json(plaintext)
        except ProfileError as exc:
            # ProfileError messages are written to be safe to show (no profile values); their
            # advice, after the "; ", is for a profile file on its own: the tamper's is here
            what = str(exc).split("; ")[0]
            self._tamper("invalid-profile", f"decrypted but is not a usable profile ({what})")
        return profile

    def forget(self) -> dict:
        """Delete the profile, its aside copies, temp files and the key (keyring and key file).

        Returns flags: ``files_removed`` (count), ``keyring_entry_removed`` and
        ``keyring_unreachable`` (True if an entry may remain because the keyring could not be
        reached; tell the user to remove it or retry).
        """
        removed = 0
        try:
            entries = list(self.directory.iterdir()) if self.directory.is_dir() else []
        except OSError as exc:
            raise _not_usable(self.directory, "list the folder", exc) from None
        for p in entries:
            if (p.name in (PROFILE_NAME, KEY_NAME) or _ASIDE.match(p.name)
                    or (p.name.startswith(".") and p.name.endswith(".tmp")
                        and p.name[1:].startswith((PROFILE_NAME, KEY_NAME)))):
                removed += _unlink(p)
        entry_removed, unreachable = False, False
        try:
            keyring.delete_password(self.service, self.username)
            entry_removed = True
        except keyring.errors.PasswordDeleteError:
            pass  # no entry
        except Exception as exc:
            unreachable = not isinstance(exc, keyring.errors.NoKeyringError)
            if unreachable:
                log.warning("could not reach the OS keyring to delete the Cadence key (%s); "
                            "an entry may remain under service %r", type(exc).__name__,
                            self.service)
        self._protection = None
        return {"files_removed": removed, "keyring_entry_removed": entry_removed,
                "keyring_unreachable": unreachable}

    @property
    def key_protection(self) -> str:
        """``"keyring"`` or ``"key-file"``: how the profile key is (or would be) protected.

        Known from the last load, save or forget; with nothing stored, the keyring is asked
        at most once every ``REPROBE_S`` (``cadence status`` reads this every second, and a
        locked keyring may prompt; one unlocked meanwhile is seen within that)."""
        if self._protection is None or (self._probed_at is not None and
                                        time.monotonic() - self._probed_at >= REPROBE_S):
            self._probed_at = None
            source = self._stored_source()
            if source is not None:
                self._protection = _SOURCES[source]
            elif self.key_path.exists():
                self._protection = KEY_FILE
            else:           # nothing stored: what a save would do now (the keyring may unlock)
                self._protection = KEYRING if self._keyring_get()[0] else KEY_FILE
                self._probed_at = time.monotonic()
        return self._protection

    @property
    def key_protection_note(self) -> str:
        """One sentence for ``cadence status``."""
        if self.key_protection == KEYRING:
            return "The profile is encrypted with a key held in the OS keyring."
        return ("Weaker protection: no usable OS keyring, so the profile key is kept in a file "
                f"readable only by you ({self.key_path}); anyone who can read your files or "
                "their backups can decrypt the profile. Install or unlock a keyring (GNOME "
                "Keyring, KWallet; on Windows and macOS it is built in): Cadence moves the key "
                "into it the next time it saves the profile (at the latest when it stops).")

    def status(self) -> dict:
        """Numbers and flags about the store, never content."""
        present = self.path.is_file()
        protection = self.key_protection
        return {
            "profile_present": present,
            "profile_bytes": self.path.stat().st_size if present else 0,
            "format_version": FORMAT_VERSION,
            "key_protection": protection,
            "key_protection_weaker": protection != KEYRING,
            "key_file_present": self.key_path.is_file(),
            "tampered_copies": len(self.tampered_copies()),
        }

    # -- keys ----------------------------------------------------------------------------------

    def _key_for_writing(self) -> _Key:
        ok, value = self._keyring_get()
        if ok:
            material = decode_key(value) if value is not None else None
            if material is not None:
                return _Key(material, SOURCE_KEYRING)
            material = AESGCM.generate_key(bit_length=256)
            if self._keyring_set(material):
                return _Key(material, SOURCE_KEYRING)
        if self._stored_source() == SOURCE_KEYRING:  # even with a key file: see _key_for_reading
            raise KeyUnavailableError(
                "the stored profile's key is in the OS keyring, which is locked or not "
                "reachable: not writing over that profile; unlock the keyring")
        material = self._read_key_file()
        if material is None:
            material = AESGCM.generate_key(bit_length=256)
            _write(self.key_path, material)
        return _Key(material, SOURCE_FILE)

    def _key_for_reading(self, source: bytes, blob: bytes) -> _Key:
        if source == SOURCE_FILE:
            material = self._read_key_file()
            if material is None:
                self._tamper("key-missing", "exists but its key file is missing or damaged")
            return _Key(material, SOURCE_FILE)
        ok, value = self._keyring_get()
        if ok:
            material = decode_key(value) if value is not None else None
            if material is None:
                self._tamper("key-missing",
                             "exists but its key is missing from the OS keyring or damaged")
            return _Key(material, SOURCE_KEYRING)
        # Keyring locked or unreachable. A key file here is either left over from a save that
        # stopped between writing this profile and deleting the key file (then only the keyring
        # key opens it: wait for it), or the profile is a key-file one relabelled "keyring" to
        # make Cadence wait (then the key file opens it under the key-file header: tamper).
        material = self._read_key_file()
        if material is not None and _decrypt(material, blob, _header(SOURCE_FILE)) is not None:
            self._tamper("authentication", "failed authentication (its header was changed)")
        raise KeyUnavailableError(
            "the profile's key is in the OS keyring, which is locked or not reachable; unlock "
            "the keyring (or start the desktop session's keyring) and Cadence will load it (if "
            "the keyring is gone for good, `cadence enroll --restart` starts a new profile)")

    def _keyring_get(self) -> tuple[bool, str | None]:
        """(usable, value): usable is False if the keyring raised or is a do-nothing backend."""
        if not self._keyring_backend_ok():
            return False, None
        try:
            return True, keyring.get_password(self.service, self.username)
        except Exception as exc:  # NoKeyringError, KeyringLocked, InitError, D-Bus errors, ...
            self._warn_fallback(exc)
            return False, None

    def _keyring_set(self, material: bytes) -> bool:
        value = base64.b64encode(material).decode("ascii")
        try:
            keyring.set_password(self.service, self.username, value)
            if keyring.get_password(self.service, self.username) == value:
                return True
            log.warning("the OS keyring did not keep the Cadence key")
        except Exception as exc:
            self._warn_fallback(exc)
            return False
        self._warn_fallback(None)
        return False

    def _keyring_backend_ok(self) -> bool:
        from keyring.backends import fail, null
        backend = keyring.get_keyring()
        if isinstance(backend, (fail.Keyring, null.Keyring)):
            self._warn_fallback(None)
            return False
        return True

    def _warn_fallback(self, exc: Exception | None) -> None:
        if self._warned:
            return
        self._warned = True
        why = type(exc).__name__ if exc is not None else "no usable backend"
        log.warning("no usable OS keyring (%s); Cadence falls back to a key file readable only "
                    "by you (%s), which is weaker protection", why, self.key_path)

    def _read_key_file(self) -> bytes | None:
        try:
            fd = os.open(self.key_path, os.O_RDONLY | _BINARY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _not_usable(self.key_path, "read the file", exc) from None
        try:
            with os.fdopen(fd, "rb") as f:
                if os.name == "posix":
                    mode = os.fstat(f.fileno()).st_mode & 0o777
                    if mode & 0o077:
                        log.warning("the Cadence key file was readable by others (mode %o); "
                                    "restricting it to you", mode)
                        os.fchmod(f.fileno(), 0o600)
                material = f.read(KEY_LEN + 1)
        except OSError as exc:
            raise _not_usable(self.key_path, "read the file", exc) from None
        return material if len(material) == KEY_LEN else None

    # -- files ---------------------------------------------------------------------------------

    def _stored_source(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                header = f.read(HEADER_LEN)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _not_usable(self.path, "read the file", exc) from None
        if len(header) == HEADER_LEN and header[:len(MAGIC)] == MAGIC:
            return header[len(MAGIC) + 1:] if header[len(MAGIC) + 1:] in _SOURCES else None
        return None

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if os.name == "posix":
                mode = self.directory.stat().st_mode & 0o777
                if mode != 0o700:
                    log.warning("restricting the Cadence data folder %s to you (was %o)",
                                self.directory, mode)
                    os.chmod(self.directory, 0o700)
        except OSError as exc:
            raise _not_usable(self.directory, "use the folder", exc) from None

    def _tamper(self, reason: str, detail: str) -> NoReturn:
        self._protection = None
        moved = self._move_aside()
        log.warning("the stored profile %s (%s); moved aside to %s; re-enrolment needed",
                    detail, reason, moved.name if moved else "nowhere (move failed)")
        raise TamperError(reason, detail, moved) from None

    def _move_aside(self) -> Path | None:
        copies = self.tampered_copies()
        n = int(_ASIDE.match(copies[-1].name).group(1)) + 1 if copies else 1
        while (target := self.directory / f"{PROFILE_NAME}.tampered-{n}").exists():
            n += 1
        try:
            os.replace(self.path, target)
        except OSError as exc:
            log.error("could not move the tampered profile aside (%s); deleting it instead",
                      type(exc).__name__)
            _unlink(self.path)
            return None
        fsync_directory(self.directory)
        return target


def _header(source: bytes) -> bytes:
    return MAGIC + bytes([FORMAT_VERSION]) + source


def _decrypt(material: bytes, blob: bytes, header: bytes) -> bytes | None:
    """The plaintext of a stored blob under ``material`` with ``header`` as associated data,
    or None if it does not authenticate."""
    nonce = blob[HEADER_LEN:HEADER_LEN + NONCE_LEN]
    try:
        return AESGCM(material).decrypt(nonce, blob[HEADER_LEN + NONCE_LEN:], header)
    except InvalidTag:
        return None


def decode_key(value: str) -> bytes | None:
    """A base64 key as stored in the keyring; None unless it is a whole 256-bit key."""
    try:
        material = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError):
        return None
    return material if len(material) == KEY_LEN else None


def _not_usable(path: Path, doing: str, exc: OSError) -> StoreError:
    """The error for a store file or folder Cadence cannot read or write (no content in it)."""
    kind = "folder" if doing.endswith("folder") else "file"
    return StoreError(f"cannot {doing} {path} ({exc.strerror or type(exc).__name__}); it must "
                      f"be a {kind} that the user running Cadence owns and can read and write "
                      "(running Cadence with sudo can leave it owned by root): fix its owner "
                      "and permissions, and Cadence uses it again")


def _write(path: Path, data: bytes) -> None:
    try:
        write_private(path, data)
    except OSError as exc:
        raise _not_usable(path, "write the file", exc) from None


def _unlink(path: Path) -> int:
    try:
        os.unlink(path)
        return 1
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StoreError(f"cannot delete {path} ({exc.strerror}); remove it by hand") from None
