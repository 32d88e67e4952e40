"""The audit log: JSON lines, rotation, permissions, and nothing that could carry text."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from datetime import datetime, timezone

import pytest

from agent.actions import audit
from agent.actions.audit import AuditLog

CANARY = "CANARY-hunter2-the-quick-brown-fox"


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_records_are_json_lines_with_utc_time(tmp_path):
    log = AuditLog(tmp_path / "logs" / "audit.jsonl")
    before = datetime.now(timezone.utc)
    log.record("verdict", verdict="impostor", trust=0.12, score=3.5, window_keys=48,
               injected=False, state="alert", reason="rank_shift", model_version=2,
               flight_ms_p50=[81.5, 90.0], note=None)
    log.record("lock", method="locker:i3lock", verified=True, detail_code="verified")
    lines = (tmp_path / "logs" / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["kind"] == "verdict" and first["verdict"] == "impostor"
    assert first["flight_ms_p50"] == [81.5, 90.0] and first["injected"] is False
    assert first["note"] is None
    assert second == {"time": second["time"], "kind": "lock", "method": "locker:i3lock",
                      "verified": True, "detail_code": "verified"}
    assert second["time"].endswith("Z")
    stamp = datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert stamp.tzinfo is not None and abs((stamp - before).total_seconds()) < 5
    assert log.read() == [first, second]


def test_permissions_file_0600_folder_0700(tmp_path):
    os.umask(0o022)
    path = tmp_path / "a" / "b" / "audit.jsonl"
    AuditLog(path).record("start", version="0.1.0")
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700 and _mode(path.parent.parent) == 0o700


def test_existing_loose_file_is_tightened(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    path.chmod(0o644)
    AuditLog(path).record("start")
    assert _mode(path) == 0o600


def test_existing_folder_is_left_alone(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    AuditLog(shared / "audit.jsonl").record("start")
    assert _mode(shared) == 0o755


def test_rotation_keeps_n_backups(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=400, backups=3)
    for i in range(200):
        log.record("tick", seq=i, trust=0.5)
    files = log.files()
    assert [p.name for p in files] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2",
                                       "audit.jsonl.3"]
    assert not (tmp_path / "audit.jsonl.4").exists()
    for p in files:
        assert p.stat().st_size <= 400
        assert _mode(p) == 0o600
        for line in p.read_text().splitlines():
            json.loads(line)  # every line whole: rotation never splits a record
    seqs = [r["seq"] for r in log.read()]
    assert seqs == sorted(seqs) and seqs[-1] == 199  # oldest dropped, order kept
    assert len(seqs) < 200


def test_rotation_with_no_backups(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=200, backups=0)
    for i in range(50):
        log.record("tick", seq=i)
    assert [p.name for p in log.files()] == ["audit.jsonl"]
    assert log.read()[-1]["seq"] == 49


@pytest.mark.parametrize("fields", [
    {"comment": "hello"},                       # a string in a field not on the whitelist
    {"text": "a"},
    {"verdict": "two words"},                   # whitelisted, but not a code
    {"reason": "x" * 65},                       # too long
    {"state": "line\nbreak"},
    {"state": "tab\there"},
    {"keys": ["a", "b"]},                       # a list of strings
    {"blob": b"bytes"},
    {"nested": {"verdict": "ok"}},
    {"score": float("nan")},
    {"score": float("-inf")},
    {"series": list(range(65))},                # too long a list
    {"Upper": 1},                               # field names are identifiers
    {"time": 1},                                # reserved
])
def test_disallowed_fields_are_rejected_and_nothing_written(tmp_path, fields):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    with pytest.raises(ValueError):
        log.record("verdict", trust=0.5, **fields)
    assert not path.exists() or path.read_text() == ""


def test_kind_must_be_a_code(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    for kind in ("", "free text kind", 3):
        with pytest.raises(ValueError):
            log.record(kind)


def test_canary_never_reaches_the_file_or_the_error(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.record("start", version="0.1.0")
    for name in ("typed", "window_text", "detail", "title"):
        with pytest.raises(ValueError) as info:
            log.record("verdict", verdict="ok", **{name: CANARY})
        assert CANARY not in str(info.value)  # errors end up in logs and crash reports
        assert "hunter2" not in repr(info.value)
    with pytest.raises(ValueError) as info:
        log.record("verdict", verdict=CANARY + " with spaces")
    assert CANARY not in str(info.value)
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert b"hunter2" not in p.read_bytes()
    assert [r["kind"] for r in log.read()] == ["start"]


def test_whitelisted_codes_are_accepted(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    entry = log.record("status", state="learning", modality="keystroke", host="ws-0042.corp",
                       user="j.doe@corp", version="0.1.0+dev", detail_code="no_logind",
                       method="locker:i3lock", reason="")
    assert log.read() == [entry]


def test_concurrent_writers_do_not_interleave(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=10_000, backups=50)

    def write(worker):
        for i in range(100):
            log.record("tick", worker=worker, seq=i)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    records = log.read()
    assert len(records) == 400
    for w in range(4):
        assert [r["seq"] for r in records if r["worker"] == w] == list(range(100))


def test_default_path_is_the_user_log_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = audit.default_path()
    assert path.name == "audit.jsonl" and "cadence" in path.parts
    log = AuditLog()
    log.record("start")
    assert log.path == path and _mode(path) == 0o600 and _mode(path.parent) == 0o700


def test_prune_deletes_only_rotated_files_older_than_retention(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=200, backups=5)
    for i in range(40):
        log.record("heartbeat", state="protecting", windows=i)
    files = log.files()
    assert len(files) >= 3
    old = files[-1]
    os.utime(old, (0, 0))  # 1970: long past any retention
    assert log.prune(retention_days=90) == 1
    assert not old.exists() and log.path.exists()
    os.utime(log.path, (0, 0))
    log.prune(retention_days=1)
    assert log.path.exists()  # the current file is never pruned, however old


def test_a_log_that_cannot_be_written_counts_the_loss_and_never_raises(tmp_path, caplog):
    """A full disk or a folder made unwritable must not stop the lock or the SIEM alert the
    record goes with: the record comes back, the loss is counted and said."""
    path = tmp_path / "audit.jsonl"
    path.mkdir()                      # what is there cannot be appended to
    log = AuditLog(path)
    entry = log.record("impostor", verdict="impostor", score=3.0)
    assert entry["kind"] == "impostor" and entry["score"] == 3.0
    log.record("lock", reason="impostor", locked=True)
    assert log.write_failures == 2
    assert "cannot write the audit log" in caplog.text and "2 records lost" not in caplog.text
    with pytest.raises(ValueError):   # a field the rules refuse is still refused
        log.record("impostor", note="typed text")


def test_a_write_cut_short_by_a_full_disk_is_counted_and_the_next_record_is_whole(tmp_path,
                                                                                monkeypatch,
                                                                                caplog):
    """The disk fills up mid-record: the kernel takes part of the line, then says ENOSPC. That
    record is counted lost, the next one starts on a line of its own once there is space, and
    the reader skips the torn line and counts it instead of failing."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    first = log.record("start", version="0.1.0")
    audit_file = (path.stat().st_dev, path.stat().st_ino)
    real_write, free = os.write, [20]            # bytes left on the disk

    def filling_disk(fd, data):
        st = os.fstat(fd)
        if free[0] is None or (st.st_dev, st.st_ino) != audit_file:
            return real_write(fd, data)
        if free[0] == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[:free[0]]))
        free[0] -= written
        return written

    monkeypatch.setattr(os, "write", filling_disk)
    lost = log.record("impostor", verdict="impostor", score=3.0)
    assert lost["kind"] == "impostor" and log.write_failures == 1
    assert "cannot write the audit log" in caplog.text and "No space left" in caplog.text
    free[0] = None                               # space freed
    third = log.record("lock", reason="impostor", locked=True)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 3 and len(lines[1]) == 20   # the torn line is a line of its own
    assert log.read() == [first, third] and log.torn_lines == 1
    assert "1 torn line(s)" in caplog.text


def test_a_torn_line_left_by_an_earlier_run_is_not_glued_to_the_next_record(tmp_path):
    """The agent stopped (or the machine went down) after a write cut short: the next run's
    first record still starts on a line of its own."""
    path = tmp_path / "audit.jsonl"
    first = AuditLog(path).record("start", version="0.1.0")
    with open(path, "ab") as f:
        f.write(b'{"time": "2026-11-25T0')             # what the full disk took
    second = AuditLog(path).record("start", version="0.1.0")
    log = AuditLog(path)
    assert log.read() == [first, second] and log.torn_lines == 1
