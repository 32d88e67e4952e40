"""The encrypted profile store, against a real Secret Service where the machine has one.

Tests in this process force keyring's ``fail`` backend (as on a machine without a desktop
session), or a :class:`MemoryKeyring` that can be locked, so they never touch a developer's real
keyring. The Secret Service tests run a child Python inside ``dbus-run-session`` with
gnome-keyring and a fresh HOME in tmp_path.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import keyring
import keyring.backend
import keyring.errors
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings, strategies as st
from keyring.backends import fail, null

from agent import store
from agent.model.profile import Profile
from agent.store import (HEADER_LEN, NONCE_LEN, KeyUnavailableError, ProfileStore, StoreError,
                         TamperError)

POSIX = os.name == "posix"


@pytest.fixture(scope="module")
def profile() -> Profile:
    from agent.features.keystroke import N_FEATURES
    from agent.model.detector import RankShift
    from agent.model.profile import KeystrokeModel
    X = np.random.default_rng(0).poisson(0.05, size=(6, N_FEATURES)).astype(float)
    return Profile(KeystrokeModel.from_detector(RankShift().fit(X)))


@pytest.fixture(scope="module", autouse=True)
def no_keyring():
    """This process behaves like a machine without a keyring (and never uses the real one)."""
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(previous)


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring backend in memory that can be locked (like a Secret Service whose login keyring
    is not unlocked) and counts how often it is asked. No ``priority``: never auto-selected."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict = {}
        self.locked = False
        self.reads = 0

    def _check(self) -> None:
        if self.locked:
            raise keyring.errors.KeyringLocked("the keyring is locked")

    def get_password(self, service, username):
        self.reads += 1
        self._check()
        return self.entries.get((service, username))

    def set_password(self, service, username, password):
        self._check()
        self.entries[(service, username)] = password

    def delete_password(self, service, username):
        self._check()
        if self.entries.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError("no such entry")


@pytest.fixture
def ring():
    memory = MemoryKeyring()
    keyring.set_keyring(memory)
    yield memory
    keyring.set_keyring(fail.Keyring())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def same(a: Profile, b: Profile) -> bool:
    return a.to_json() == b.to_json()


def assert_tamper_then_reenrol(s: ProfileStore, profile: Profile, reason: str | None = None):
    """The common tamper contract: raise, move aside, next load is None, a new save works."""
    with pytest.raises(TamperError) as info:
        s.load()
    if reason is not None:
        assert info.value.reason == reason, str(info.value)
    assert info.value.moved_to is not None and info.value.moved_to.exists()
    assert not s.path.exists()
    assert "learns the typing again by itself" in str(info.value)
    assert "enroll --restart" not in str(info.value)  # that would delete the aside copy
    assert s.load() is None
    s.save(profile)
    assert same(s.load(), profile)
    return info.value


# -- without a keyring: the key file -----------------------------------------------------------

def test_without_keyring_falls_back_to_a_user_only_key_file(tmp_path, profile, caplog):
    caplog.set_level(logging.WARNING, logger="agent.store")
    s = ProfileStore(tmp_path / "data")
    assert s.load() is None and not s.directory.exists()  # nothing stored, nothing created
    assert s.key_protection == "key-file"

    s.save(profile)
    assert same(s.load(), profile)
    assert s.key_protection == "key-file"
    assert "Weaker protection" in s.key_protection_note and str(s.key_path) in s.key_protection_note
    assert s.key_path.read_bytes() != b"" and len(s.key_path.read_bytes()) == 32
    if POSIX:
        assert mode(s.directory) == 0o700
        assert mode(s.path) == 0o600
        assert mode(s.key_path) == 0o600
    assert sorted(p.name for p in s.directory.iterdir()) == ["profile.enc", "profile.key"]
    status = s.status()
    assert status["profile_present"] and status["key_protection"] == "key-file"
    assert status["key_protection_weaker"] and status["key_file_present"]
    assert status["tampered_copies"] == 0
    assert all(isinstance(v, (bool, int, str)) for v in status.values())

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("no usable OS keyring" in m and "weaker protection" in m for m in warnings)
    assert len(warnings) == 1  # warned once, not on every call
    assert_no_secrets(caplog.text, s)

    # a fresh store object (a restarted agent) reads the same profile
    again = ProfileStore(tmp_path / "data")
    assert same(again.load(), profile) and again.key_protection == "key-file"


def test_a_keyring_that_does_not_keep_the_key_is_not_trusted(tmp_path, profile):
    """keyring's null backend accepts set_password and forgets it: fall back, do not lose data."""
    keyring.set_keyring(null.Keyring())
    try:
        s = ProfileStore(tmp_path)
        s.save(profile)
        assert s.key_protection == "key-file" and s.key_path.exists()
        assert same(ProfileStore(tmp_path).load(), profile)
    finally:
        keyring.set_keyring(fail.Keyring())


def test_file_on_disk_holds_no_plaintext_and_no_numbers(tmp_path, profile):
    s = ProfileStore(tmp_path)
    s.save(profile)
    blob = s.path.read_bytes()
    plaintext = profile.to_json()
    for needle in (b"cadence-profile", b"keystroke", b"calibration", b"threshold", b"counts",
                   b"\"windows\"", repr(profile.keystroke.threshold).encode(),
                   repr(float(profile.keystroke.calibration[-1])).encode()):
        assert needle not in blob, needle
    assert plaintext not in blob and len(blob) == HEADER_LEN + NONCE_LEN + len(plaintext) + 16
    assert blob[:4] == b"CDNC"


def test_every_write_uses_a_fresh_nonce_and_is_atomic(tmp_path, profile):
    s = ProfileStore(tmp_path)
    s.save(profile)
    first = s.path.read_bytes()
    s.save(profile)
    second = s.path.read_bytes()
    assert first[:HEADER_LEN] == second[:HEADER_LEN]
    assert first[HEADER_LEN:HEADER_LEN + NONCE_LEN] != second[HEADER_LEN:HEADER_LEN + NONCE_LEN]
    assert first != second
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(not POSIX, reason="POSIX permission bits")
def test_wide_folder_and_key_file_permissions_are_tightened(tmp_path, profile):
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    s = ProfileStore(folder)
    s.save(profile)
    assert mode(folder) == 0o700
    os.chmod(s.key_path, 0o644)
    assert same(s.load(), profile)
    assert mode(s.key_path) == 0o600


def test_status_asks_the_keyring_once_not_on_every_call(tmp_path, profile, ring):
    """The agent reads key_protection and its note every second for ``cadence status``; a
    locked Secret Service can answer each read with an unlock prompt."""
    s = ProfileStore(tmp_path)

    def reads_for_status(times: int = 100) -> int:
        before = ring.reads
        for _ in range(times):
            assert s.key_protection_note and s.key_protection
        return ring.reads - before

    assert reads_for_status() == 1 and s.key_protection == "keyring"  # learning: nothing stored
    s.save(profile)
    assert reads_for_status() == 0 and s.key_protection == "keyring"
    s.forget()
    assert reads_for_status() == 1 and s.key_protection == "keyring"
    ring.locked = True                   # the keyring locks: a new key goes to a key file
    s.save(profile)
    assert reads_for_status() == 0 and s.key_protection == "key-file" and s.key_path.exists()
    ring.locked = False                  # unlocked: the next save moves the key into it
    s.save(profile)
    assert reads_for_status() == 0 and s.key_protection == "keyring" and not s.key_path.exists()

    learning_while_locked = ProfileStore(tmp_path / "other")
    ring.locked = True
    before = ring.reads
    for _ in range(100):
        assert learning_while_locked.key_protection == "key-file"
        assert "Weaker protection" in learning_while_locked.key_protection_note
    assert ring.reads - before == 1
    ring.locked = False                  # unlocked meanwhile: seen within REPROBE_S
    learning_while_locked._probed_at -= store.REPROBE_S     # a minute on
    assert learning_while_locked.key_protection == "keyring"


class Crash(BaseException):
    """The process dies here."""


def test_a_crash_between_writing_a_keyring_profile_and_deleting_the_key_file_is_not_tamper(
        tmp_path, profile, ring, monkeypatch):
    ring.locked = True
    ProfileStore(tmp_path).save(profile)                 # a key-file profile
    ring.locked = False

    def crash(path):
        raise Crash

    monkeypatch.setattr(store, "_unlink", crash)        # dies right after writing the profile
    with pytest.raises(Crash):
        ProfileStore(tmp_path).save(profile)            # onto the keyring key
    monkeypatch.undo()
    s = ProfileStore(tmp_path)
    assert s.path.read_bytes()[:HEADER_LEN] == b"CDNC\x01K" and s.key_path.exists()

    ring.locked = True                                   # the next start: keyring still locked
    before = s.path.read_bytes()
    with pytest.raises(KeyUnavailableError, match="unlock"):
        s.load()
    with pytest.raises(KeyUnavailableError, match="unlock"):
        s.save(profile)                                  # nor written over with the stale key
    assert s.path.read_bytes() == before and s.tampered_copies() == []
    assert s.key_protection == "keyring"

    ring.locked = False
    assert same(s.load(), profile)
    s.save(profile)
    assert not s.key_path.exists() and same(ProfileStore(tmp_path).load(), profile)


def test_a_key_file_profile_relabelled_keyring_is_tamper_even_while_the_keyring_is_locked(
        tmp_path, profile, ring):
    ring.locked = True
    s = ProfileStore(tmp_path)
    s.save(profile)
    blob = s.path.read_bytes()
    s.path.write_bytes(b"CDNC\x01K" + blob[HEADER_LEN:])  # "wait for the keyring" instead
    assert_tamper_then_reenrol(s, profile, "authentication")


@pytest.mark.parametrize("damage", ["no-permission", "a-folder"])
def test_a_key_file_cadence_cannot_read_is_a_store_error_naming_it(tmp_path, profile, damage):
    """E.g. left owned by root by a `sudo cadence` run: not a crash, not tamper; the agent runs
    degraded (runtime catches StoreError) until the file is given back."""
    s = ProfileStore(tmp_path)
    s.save(profile)
    key = s.key_path.read_bytes()
    if damage == "no-permission":
        os.chmod(s.key_path, 0)
        try:
            s.key_path.read_bytes()
            pytest.skip("this user reads any file (root, or not POSIX permissions)")
        except PermissionError:
            pass
    else:
        s.key_path.unlink()
        s.key_path.mkdir()
    for attempt in (s.load, lambda: s.save(profile), lambda: ProfileStore(tmp_path).load()):
        with pytest.raises(StoreError) as info:
            attempt()
        assert type(info.value) is StoreError
        message = str(info.value)
        assert str(s.key_path) in message and "fix its owner and permissions" in message
    assert s.path.exists() and s.tampered_copies() == []
    if damage == "no-permission":
        os.chmod(s.key_path, 0o600)
    else:
        s.key_path.rmdir()
        s.key_path.write_bytes(key)
    assert same(s.load(), profile)                       # given back: used again


def test_a_profile_file_or_data_folder_cadence_cannot_write_is_a_store_error(tmp_path, profile):
    s = ProfileStore(tmp_path / "data")
    s.directory.write_text("a file where the folder should be")
    with pytest.raises(StoreError, match="fix its owner and permissions") as info:
        s.save(profile)
    assert f"use the folder {s.directory}" in str(info.value)

    s = ProfileStore(tmp_path / "other")
    s.path.mkdir(parents=True)
    (s.path / "x").write_text("")                        # a folder where the profile should be
    for attempt in (s.load, lambda: s.save(profile)):
        with pytest.raises(StoreError, match="fix its owner and permissions") as info:
            attempt()
        assert str(s.path) in str(info.value) and type(info.value) is StoreError
    assert not [p for p in s.directory.iterdir() if p.name.endswith(".tmp")]


# -- tamper ------------------------------------------------------------------------------------

def fresh_saved(profile: Profile, root: str) -> ProfileStore:
    s = ProfileStore(Path(root) / "data")
    s.save(profile)
    return s


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_flipped_bit_or_byte_is_tamper(profile, data):
    with tempfile.TemporaryDirectory() as root:
        s = fresh_saved(profile, root)
        blob = bytearray(s.path.read_bytes())
        position = data.draw(st.integers(0, len(blob) - 1), label="position")
        xor = data.draw(st.integers(1, 255), label="xor")
        blob[position] ^= xor
        s.path.write_bytes(bytes(blob))
        assert_tamper_then_reenrol(s, profile)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_truncated_or_extended_file_is_tamper(profile, data):
    with tempfile.TemporaryDirectory() as root:
        s = fresh_saved(profile, root)
        blob = s.path.read_bytes()
        if data.draw(st.booleans(), label="truncate"):
            blob = blob[:data.draw(st.integers(0, len(blob) - 1), label="length")]
        else:
            blob = blob + data.draw(st.binary(min_size=1, max_size=64), label="tail")
        s.path.write_bytes(blob)
        error = assert_tamper_then_reenrol(s, profile)
        assert error.reason in ("truncated", "authentication")


@pytest.mark.parametrize("header, reason", [
    (b"CDNC\x01K", "authentication"),  # claims the keyring: the key file key fails the AAD check
    (b"CDNC\x02F", "version"),
    (b"CDNC\x00F", "version"),
    (b"CDNC\x01X", "header"),
    (b"XDNC\x01F", "header"),
])
def test_swapped_header_is_tamper(tmp_path, profile, header, reason):
    s = ProfileStore(tmp_path)
    s.save(profile)
    blob = s.path.read_bytes()
    assert blob[:HEADER_LEN] == b"CDNC\x01F"
    s.path.write_bytes(header + blob[HEADER_LEN:])
    assert_tamper_then_reenrol(s, profile, reason)


def test_header_is_associated_data(tmp_path, profile):
    """Re-encrypting nothing, only relabelling: the tag covers the header bytes."""
    s = ProfileStore(tmp_path)
    s.save(profile)
    key = s.key_path.read_bytes()
    blob = s.path.read_bytes()
    header, nonce, body = blob[:HEADER_LEN], blob[HEADER_LEN:HEADER_LEN + NONCE_LEN], \
        blob[HEADER_LEN + NONCE_LEN:]
    assert AESGCM(key).decrypt(nonce, body, header) == profile.to_json()
    with pytest.raises(Exception):
        AESGCM(key).decrypt(nonce, body, b"CDNC\x01K")


def test_wrong_key_is_tamper(tmp_path, profile):
    s = ProfileStore(tmp_path)
    s.save(profile)
    s.key_path.write_bytes(AESGCM.generate_key(bit_length=256))
    assert_tamper_then_reenrol(s, profile, "authentication")


def test_profile_from_another_store_is_tamper(tmp_path, profile):
    mine, theirs = ProfileStore(tmp_path / "mine"), ProfileStore(tmp_path / "theirs")
    mine.save(profile)
    theirs.save(profile)
    shutil.copyfile(theirs.path, mine.path)
    assert_tamper_then_reenrol(mine, profile, "authentication")


@pytest.mark.parametrize("damage", ["missing", "short", "long"])
def test_missing_or_damaged_key_file_while_a_profile_exists_is_tamper(tmp_path, profile, damage):
    s = ProfileStore(tmp_path)
    s.save(profile)
    if damage == "missing":
        s.key_path.unlink()
    else:
        key = s.key_path.read_bytes()
        s.key_path.write_bytes(key[:16] if damage == "short" else key + b"\0")
    assert_tamper_then_reenrol(s, profile, "key-missing")


@pytest.mark.parametrize("plaintext", [
    b"not json at all",
    b'{"format": "cadence-profile", "version": 99, "keystroke": {}}',
    b'{"format": "cadence-profile", "version": 1, "keystroke": {"shape": [1, 2]}}',
    b"[1, 2, 3]",
])
def test_authentic_but_invalid_profile_is_tamper(tmp_path, profile, plaintext):
    """Encrypted with the real key (built here with cryptography directly), but not a profile."""
    s = ProfileStore(tmp_path)
    s.save(profile)
    header = s.path.read_bytes()[:HEADER_LEN]
    nonce = os.urandom(NONCE_LEN)
    s.path.write_bytes(header + nonce
                       + AESGCM(s.key_path.read_bytes()).encrypt(nonce, plaintext, header))
    error = assert_tamper_then_reenrol(s, profile, "invalid-profile")
    assert "not a usable profile" in str(error)


def test_tampered_copies_are_numbered_and_counted(tmp_path, profile):
    s = ProfileStore(tmp_path)
    for expected in (1, 2, 3):
        s.save(profile)
        s.path.write_bytes(b"garbage")
        with pytest.raises(TamperError) as info:
            s.load()
        assert info.value.moved_to.name == f"profile.enc.tampered-{expected}"
        if POSIX:
            assert mode(info.value.moved_to) == 0o600
    assert s.status()["tampered_copies"] == 3
    assert s.status()["profile_present"] is False


def test_errors_and_logs_hold_no_key_bytes_or_profile_content(tmp_path, profile, caplog):
    caplog.set_level(logging.DEBUG)
    s = ProfileStore(tmp_path)
    s.save(profile)
    blob = bytearray(s.path.read_bytes())
    blob[-1] ^= 1
    s.path.write_bytes(bytes(blob))
    with pytest.raises(TamperError) as info:
        s.load()
    text = str(info.value) + repr(info.value) + caplog.text
    assert_no_secrets(text, s, key=s.key_path.read_bytes())
    assert info.value.__cause__ is None and info.value.__suppress_context__


def assert_no_secrets(text: str, s: ProfileStore, key: bytes | None = None) -> None:
    key = key if key is not None else (s.key_path.read_bytes() if s.key_path.exists() else None)
    if key is not None:
        for form in (base64.b64encode(key).decode(), key.hex(), repr(key)):
            assert form not in text
    for needle in ("cadence-profile", "calibration", "threshold"):
        assert needle not in text


# -- forget ------------------------------------------------------------------------------------

def test_forget_removes_profile_copies_temp_files_and_key(tmp_path, profile):
    s = ProfileStore(tmp_path / "data")
    s.save(profile)
    s.path.write_bytes(b"junk")
    with pytest.raises(TamperError):
        s.load()
    s.save(profile)
    (s.directory / ".profile.enc.123.abcd.tmp").write_bytes(b"half a write")
    (s.directory / "settings.toml").write_text("# not ours\n")
    result = s.forget()
    assert result["files_removed"] == 4  # profile, aside copy, temp file, key file
    assert result["keyring_unreachable"] is False  # fail backend: there is no keyring at all
    assert sorted(p.name for p in s.directory.iterdir()) == ["settings.toml"]
    assert s.load() is None
    assert s.status()["profile_present"] is False and s.status()["tampered_copies"] == 0
    assert s.forget()["files_removed"] == 0  # idempotent
    # and the store starts over cleanly
    s.save(profile)
    assert same(s.load(), profile)


def test_default_directory_is_the_platformdirs_user_data_dir():
    import platformdirs
    assert ProfileStore().directory == Path(platformdirs.user_data_dir("cadence", appauthor=False))


# -- a real Secret Service (gnome-keyring in a private D-Bus session) ---------------------------

CHILD = textwrap.dedent(r"""
    import base64, json, os, stat, subprocess, sys
    from pathlib import Path
    import keyring
    from agent.model.profile import Profile
    from agent.store import ProfileStore, TamperError, KeyUnavailableError

    step, data_dir, profile_file = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    profile = Profile.from_json(profile_file.read_bytes())
    s = ProfileStore(data_dir)
    facts = {"backend": type(keyring.get_keyring()).__module__, "user": s.username}

    def lookup():
        r = subprocess.run(["secret-tool", "lookup", "service", "cadence-agent",
                            "username", s.username], capture_output=True, text=True, timeout=20)
        return r.stdout if r.returncode == 0 else None

    def outcome(fn):
        try:
            value = fn()
            return {"ok": True, "same": value is not None and value.to_json() == profile.to_json(),
                    "none": value is None}
        except (TamperError, KeyUnavailableError) as exc:
            return {"error": type(exc).__name__, "reason": getattr(exc, "reason", None),
                    "message": str(exc)}

    if step == "round-trip":
        s.save(profile)
        secret = keyring.get_password("cadence-agent", s.username)
        facts.update(protection=s.key_protection, key_file=s.key_path.exists(),
                     secret_len=len(base64.b64decode(secret)), looked_up=lookup() == secret,
                     note=s.key_protection_note, status=s.status(),
                     file_mode=stat.S_IMODE(s.path.stat().st_mode),
                     dir_mode=stat.S_IMODE(data_dir.stat().st_mode),
                     load=outcome(ProfileStore(data_dir).load))
        # The header is associated data: put the keyring's own key into a key file and relabel
        # the header "key file". Same key, other header -> authentication fails.
        fd = os.open(s.key_path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, base64.b64decode(secret)); os.close(fd)
        blob = s.path.read_bytes()
        s.path.write_bytes(blob[:5] + b"F" + blob[6:])
        facts["swapped"] = outcome(s.load)
        facts["after_swap"] = outcome(s.load)
        s.save(profile)  # re-enrol: back on the keyring key, the key file is removed
        facts["resaved"] = {"protection": s.key_protection, "key_file": s.key_path.exists(),
                            "load": outcome(s.load)}
        # the keyring entry deleted behind our back, profile still there -> tamper
        keyring.delete_password("cadence-agent", s.username)
        facts["entry_deleted"] = outcome(s.load)
        s.save(profile)
        facts["forget"] = s.forget()
        facts["after_forget"] = {"lookup": lookup(), "files": sorted(os.listdir(data_dir)),
                                 "get": keyring.get_password("cadence-agent", s.username)}
    elif step == "save":
        s.save(profile)
        facts.update(protection=s.key_protection, key_file=s.key_path.exists(),
                     looked_up=lookup() is not None)
    elif step == "load":
        facts["load"] = outcome(s.load)
        facts["profile_still_there"] = s.path.exists()
        facts["protection"] = s.key_protection
    elif step == "locked-save":
        s.save(profile)
        facts.update(protection=s.key_protection, key_file=s.key_path.exists(),
                     key_mode=stat.S_IMODE(s.key_path.stat().st_mode),
                     load=outcome(ProfileStore(data_dir).load), forget=s.forget())
    elif step == "locked-save-over":
        before = s.path.read_bytes()
        try:
            s.save(profile)
            facts["saved"] = True
        except KeyUnavailableError as exc:
            facts.update(saved=False, message=str(exc))
        facts.update(unchanged=s.path.read_bytes() == before, key_file=s.key_path.exists())
    elif step == "locked-forget":
        env = {**os.environ, "CADENCE_HOME": str(data_dir.parent)}
        r = subprocess.run([sys.executable, "-m", "agent", "forget", "--yes"], env=env,
                           capture_output=True, text=True, timeout=60)
        facts.update(rc=r.returncode, out=r.stdout + r.stderr, files=sorted(os.listdir(data_dir)),
                     looked_up=lookup() is not None)
    print("FACTS " + json.dumps(facts))
""")

NEEDED = ("dbus-run-session", "gnome-keyring-daemon", "secret-tool")
missing = [tool for tool in NEEDED if shutil.which(tool) is None]
needs_secret_service = pytest.mark.skipif(
    bool(missing), reason=f"a real Secret Service needs {', '.join(missing)} "
    "(Debian: apt-get install dbus-x11 gnome-keyring libsecret-tools)")


@pytest.fixture
def session(tmp_path, profile):
    """Run one CHILD step in a fresh private D-Bus session with gnome-keyring.

    ``unlock=True`` starts gnome-keyring with the login keyring unlocked (password "pw");
    ``unlock=False`` lets D-Bus activate it locked (its unlock prompt cannot be shown, so it is
    dismissed): a present but locked Secret Service.
    """
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "profile.json").write_bytes(profile.to_json())
    data_dir = tmp_path / "data"

    def run(step: str, unlock: bool = True) -> dict:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
               "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CONFIG_HOME": str(home / ".config"),
               "XDG_CACHE_HOME": str(home / ".cache"), "LANG": "C.UTF-8"}
        start = ("echo pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null; "
                 if unlock else "")
        command = (f"{start}exec '{sys.executable}' '{tmp_path / 'child.py'}' {step} "
                   f"'{data_dir}' '{tmp_path / 'profile.json'}'")
        result = subprocess.run(["dbus-run-session", "--", "sh", "-c", command], env=env,
                                capture_output=True, text=True, timeout=120, cwd=tmp_path)
        lines = [line for line in result.stdout.splitlines() if line.startswith("FACTS ")]
        assert result.returncode == 0 and lines, (result.returncode, result.stdout,
                                                  result.stderr[-3000:])
        return json.loads(lines[-1][len("FACTS "):])

    return run


@needs_secret_service
def test_real_secret_service_holds_the_key_and_the_profile_round_trips(session):
    facts = session("round-trip")
    assert facts["backend"] == "keyring.backends.SecretService"
    assert facts["protection"] == "keyring" and facts["key_file"] is False
    assert facts["secret_len"] == 32
    assert facts["looked_up"], "secret-tool does not see the key under service cadence-agent"
    assert facts["note"].startswith("The profile is encrypted with a key held in the OS keyring")
    assert facts["status"]["key_protection_weaker"] is False
    assert facts["load"] == {"ok": True, "same": True, "none": False}
    if POSIX:
        assert facts["file_mode"] == 0o600 and facts["dir_mode"] == 0o700
    assert facts["swapped"]["error"] == "TamperError"
    assert facts["swapped"]["reason"] == "authentication"
    assert facts["after_swap"] == {"ok": True, "same": False, "none": True}
    assert facts["resaved"] == {"protection": "keyring", "key_file": False,
                                "load": {"ok": True, "same": True, "none": False}}
    assert facts["entry_deleted"]["error"] == "TamperError"
    assert facts["entry_deleted"]["reason"] == "key-missing"
    assert facts["forget"]["keyring_entry_removed"] is True
    assert facts["after_forget"] == {"lookup": None, "files": [], "get": None}


@needs_secret_service
def test_locked_secret_service_falls_back_to_the_key_file(session):
    facts = session("locked-save", unlock=False)
    assert facts["backend"] == "keyring.backends.SecretService"
    assert facts["protection"] == "key-file" and facts["key_file"] is True
    if POSIX:
        assert facts["key_mode"] == 0o600
    assert facts["load"] == {"ok": True, "same": True, "none": False}
    assert facts["forget"]["files_removed"] == 2


@needs_secret_service
def test_keyring_profile_waits_for_a_locked_keyring_instead_of_crying_tamper(session):
    saved = session("save")
    assert saved["protection"] == "keyring" and saved["looked_up"]
    locked = session("load", unlock=False)  # same HOME: the login keyring exists but is locked
    assert locked["load"]["error"] == "KeyUnavailableError", locked
    assert "unlock" in locked["load"]["message"]
    assert locked["profile_still_there"] and locked["protection"] == "keyring"
    unlocked = session("load")
    assert unlocked["load"] == {"ok": True, "same": True, "none": False}


@needs_secret_service
def test_a_locked_keyring_never_lets_a_new_profile_overwrite_the_stored_one(session):
    """The agent learns a new profile while the keyring that holds the stored one's key is
    locked (the whole session, with auto-login): saving it would put the user's profile out of
    reach for good. It is refused, and the stored profile loads once the keyring is open."""
    assert session("save")["protection"] == "keyring"
    locked = session("locked-save-over", unlock=False)
    assert locked["saved"] is False and "unlock" in locked["message"], locked
    assert locked["unchanged"] and locked["key_file"] is False
    assert session("load")["load"] == {"ok": True, "same": True, "none": False}
    forgot = session("locked-forget", unlock=False)     # the files go; the key cannot yet
    assert forgot["rc"] == 1 and "may remain" in forgot["out"] and forgot["files"] == []
    assert session("locked-forget")["looked_up"] is False  # unlocked: the entry goes too
