"""Loaders: the datasets' own formats in, Event streams out; bad input named, skipped, counted."""

import logging
import threading
import time

import pytest

from agent.events import Button, Event, KeyClass, Kind
from agent.sources import replay
from agent.sources.datasets import aalto
from agent.sources.loading import LoadReport, SourceError

HEADER = "PARTICIPANT_ID\tTEST_SECTION_ID\tSENTENCE\tUSER_INPUT\tKEYSTROKE_ID\tPRESS_TIME\tRELEASE_TIME\tLETTER\tKEYCODE\n"


def aalto_row(section, press, release, keycode, pid="7"):
    return f"{pid}\t{section}\t-\t-\t1\t{press}\t{release}\t-\t{keycode}\n"


def write_aalto(folder, name, body, raw=b""):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_keystrokes.txt"
    path.write_bytes((HEADER + body).encode() + raw)
    return path


def test_aalto_rows_become_sessions_of_paired_events(tmp_path):
    body = (aalto_row(2, 2000, 2090, 84) + aalto_row(2, 2100, 2180, 72)
            + aalto_row(1, 1000, 1080, 32) + aalto_row(1, 1150, 1150, 188))
    write_aalto(tmp_path / "keystrokes", "7", body)
    people, report = aalto.load(tmp_path)
    assert [p.user for p in people] == ["7"]
    first, second = people[0].sessions
    assert [e.kind for e in first] == [Kind.DOWN, Kind.UP, Kind.DOWN, Kind.UP]
    assert first[0] == Event(1000 * 10**6, Kind.DOWN, KeyClass.SPACE, 0)
    assert first[3].t_ns == 1151 * 10**6  # a 0 ms hold is clipped to 1 ms, and counted
    assert report.adjusted["hold_clipped_to_1ms"] == 1
    assert [e.key for e in second if e.kind == Kind.DOWN] == [KeyClass.LEFT_LETTER,
                                                              KeyClass.RIGHT_LETTER]


def test_aalto_malformed_rows_are_skipped_counted_and_named(tmp_path, caplog):
    body = (aalto_row(1, 1000, 1080, 84) + "7\t1\tonly three\n"
            + aalto_row(1, 1100, "1.471968e+12", 72) + aalto_row(1, 1200, 1300, 65))
    path = write_aalto(tmp_path, "7", body, raw=b"7\t1\t\xff\xfe\t-\t1\t1400\t1450\t-\t66\n")
    with caplog.at_level(logging.WARNING):
        people, report = aalto.load(tmp_path)
    assert report.skipped_rows == 2 and report.rows == 5
    assert len([e for e in people[0].sessions[0] if e.kind == Kind.DOWN]) == 3
    assert f"{path}:3" in caplog.text and f"{path}:4" in caplog.text
    assert "only three" not in caplog.text and "1.471968e+12" not in caplog.text


def test_aalto_empty_and_foreign_files_are_named_and_the_run_goes_on(tmp_path, caplog):
    write_aalto(tmp_path, "1", aalto_row(1, 1000, 1080, 84, pid="1"))
    (tmp_path / "2_keystrokes.txt").write_bytes(b"")
    (tmp_path / "3_keystrokes.txt").write_text("a,b,c\n1,2,3\n")
    with caplog.at_level(logging.ERROR):
        people, report = aalto.load(tmp_path)
    assert [p.user for p in people] == ["1"]
    assert len(report.failed_files) == 2
    assert "2_keystrokes.txt" in caplog.text and "3_keystrokes.txt" in caplog.text
    assert "not this format" in caplog.text


@pytest.mark.parametrize("layout", ["keystrokes", "files", "Keystrokes/files", "."])
def test_aalto_files_are_found_in_the_subset_and_the_public_download_layouts(tmp_path, layout):
    """The shared subset holds keystrokes/; Keystrokes.zip unpacks to Keystrokes/files/, with
    metadata_participants.txt beside the participants' files."""
    folder = tmp_path / layout
    write_aalto(folder, "7", aalto_row(1, 1000, 1080, 84))
    (folder / "metadata_participants.txt").write_text("PARTICIPANT_ID\tAGE\n7\t30\n")
    assert aalto.participant_files(tmp_path) == [folder / "7_keystrokes.txt"]
    people, report = aalto.load(tmp_path)
    assert [p.user for p in people] == ["7"] and report.files == 1 and not report.failed_files


def test_people_are_read_only_as_they_are_iterated(tmp_path):
    for pid in ("1", "2", "3"):
        write_aalto(tmp_path, pid, aalto_row(1, 1000, 1080, 84, pid=pid))
    (tmp_path / "4_keystrokes.txt").write_bytes(b"")          # unreadable: passed over
    chosen = aalto.people(tmp_path)
    assert len(chosen) == 4 and chosen.report.files == 0      # nothing read yet
    stream = iter(chosen)
    assert next(stream).user == "1" and chosen.report.files == 1
    assert [p.user for p in stream] == ["2", "3"]
    assert chosen.report.files == 4 and len(chosen.report.failed_files) == 1
    sampled = aalto.people(tmp_path, users=2, seed=5)
    assert len(sampled) == 2 and [p.user for p in sampled] == [p.user for p in sampled.load()[0]]


def test_missing_folder_and_empty_folder_say_what_to_do(tmp_path):
    with pytest.raises(SourceError, match="no such folder"):
        aalto.load(tmp_path / "nope")
    with pytest.raises(SourceError, match="Aalto 136M layout"):
        aalto.load(tmp_path)
    with pytest.raises(SourceError, match="no user folders"):
        replay.load(tmp_path)


def test_recording_round_trip_keeps_timing_and_classes(tmp_path):
    events = [
        Event(0, Kind.DOWN, KeyClass.LEFT_LETTER, 0), Event(5 * 10**6, Kind.MOVE, x=10, y=20),
        Event(80 * 10**6, Kind.UP, KeyClass.LEFT_LETTER, 0),
        Event(90 * 10**6, Kind.PRESS, x=10, y=20, button=Button.LEFT),
    ]
    events.insert(0, Event(0, Kind.ATTACH))     # a keyboard plugged in: a time, nothing else
    events.append(Event(95 * 10**6, Kind.NEW_KEYBOARD))  # one typing for the first time: same
    replay.write_session(tmp_path / "u1" / "s01.csv", events)
    text = (tmp_path / "u1" / "s01.csv").read_text()
    assert "LEFT_LETTER" in text and "0.000,attach,,,," in text
    assert "95.000,new_keyboard,,,," in text
    people, report = replay.load(tmp_path)
    got = people[0].sessions[0]
    assert not report.skipped and report.rows == len(events)
    assert [(e.t_ns, e.kind, e.key) for e in got] == [(e.t_ns, e.kind, e.key) for e in events]
    assert got[4].button == Button.LEFT and got[2].x == 10.0


def test_recording_keys_named_as_pynput_pass_the_keymap(tmp_path):
    folder = tmp_path / "u1"
    folder.mkdir()
    (folder / "s.csv").write_text("t_ms,kind,key,x,y,button\n"
                                  "0,down,Key.shift,,,\n1.5,down,H,,,\n90,up,h,,,\n"
                                  "95,up,Key.shift,,,\n120,down,<65>,,,\n")
    people, _ = replay.load(tmp_path)
    downs = [(e.key, e.press_id) for e in people[0].sessions[0] if e.kind == Kind.DOWN]
    ups = [(e.key, e.press_id) for e in people[0].sessions[0] if e.kind == Kind.UP]
    assert downs[0][0] == KeyClass.MODIFIER and downs[1][0] == KeyClass.RIGHT_LETTER
    assert ups == [(KeyClass.RIGHT_LETTER, downs[1][1]), (KeyClass.MODIFIER, downs[0][1])]


def test_recording_malformed_rows_are_skipped_with_file_and_line(tmp_path, caplog):
    folder = tmp_path / "u1"
    folder.mkdir()
    path = folder / "s.csv"
    path.write_text("t_ms,kind,key,x,y,button\n0,down,a,,,\nxx,up,a,,,\n5,jump,,,,\n"
                    "6,move,,1,2,\n7,move,,one,2,\n8,press,,1,2,thumb\n9,up,secretword,,,\n10,up\n")
    (folder / "t.csv").write_bytes(b"\xff\xfe\x00")
    (folder / "u.csv").write_text("")
    with caplog.at_level(logging.WARNING):
        people, report = replay.load(tmp_path)
    assert report.skipped_rows == 6
    for line in (3, 4, 6, 7, 8, 9):
        assert f"{path}:{line}" in caplog.text
    assert "secretword" not in caplog.text
    assert len(report.failed_files) == 2 and "not UTF-8" in caplog.text
    assert "empty file" in caplog.text
    assert [e.kind for e in people[0].sessions[0]] == [Kind.DOWN, Kind.MOVE]


def test_recording_rows_out_of_range_or_oversized_are_skipped_without_their_text(tmp_path):
    from agent.sources.loading import CSV_ROW
    folder = tmp_path / "u1"
    folder.mkdir()
    (folder / "s.csv").write_text(
        "t_ms,kind,key,x,y,button\n0,down,a,,,\ninf,up,a,,,\n1e400,up,a,,,\n"
        "2,down,<\u00b2>,,,\n3,down,<\u2460>,,,\n4,move,,inf,2,\n5,move,,1,nan,\n"
        f"6,down,{'x' * 200_000},,,\n7,up,a,,,\n", encoding="utf-8")
    people, report = replay.load(tmp_path)
    assert report.skipped_rows == 7
    reasons = str(report.as_dict())
    for text in ("\u00b2", "\u2460", "xxxx"):
        assert text not in reasons
    assert CSV_ROW in report.skipped
    assert [e.kind for e in people[0].sessions[0]] == [Kind.DOWN, Kind.UP]


def test_load_report_has_counts_only():
    report = LoadReport()
    report.skip("f", 3, "bad")
    assert report.as_dict()["skipped_by_reason"] == {"bad": 1}


def test_live_callbacks_stamp_events_with_a_fine_grained_monotonic_clock(monkeypatch):
    """Every callback takes its time from ``live.clock_ns``, and that clock is monotonic and
    resolves microseconds on this system (on Windows, Python < 3.13's monotonic_ns steps by
    15.6 ms: the reason it is not the clock)."""
    import time as _time

    from pynput.keyboard import KeyCode
    from pynput.mouse import Button as MouseButton

    from agent.sources import live

    info = _time.get_clock_info(live.clock_ns.__name__.removesuffix("_ns"))
    assert info.monotonic and info.resolution <= 1e-6
    ticks = iter(range(1000, 10**6, 1000))
    monkeypatch.setattr(live, "clock_ns", lambda: next(ticks))
    source = live.LiveSource()
    source.on_press(KeyCode.from_char("a"))
    source.on_release(KeyCode.from_char("a"))
    source.on_move(1, 2)
    source.on_click(1, 2, MouseButton.left, True)
    source.on_scroll(1, 2, 0, 1)
    source.keyboard_attached()
    times = [source.queue.get_nowait().t_ns for _ in range(6)]
    assert times == [1000, 2000, 3000, 4000, 5000, 6000]


def test_held_keys_are_forgotten_by_the_hook_thread_whatever_it_is_doing():
    """The worker asks the hooks to forget the held keys (a lock, an unlock, a pause) while
    the hook thread pairs a release that matches no held key (a shifted key released as
    another): no key callback fails (a failure's KeyError would be the key itself), and the
    next press of a key held before is a new press, not auto-repeat."""
    import sys

    from pynput.keyboard import Key, KeyCode

    from agent.sources.live import LiveSource

    source = LiveSource(maxsize=10)
    failures: list[str] = []
    done = threading.Event()

    def hooks():
        keys = [KeyCode.from_char(c) for c in "!@#$%^&*"] + [Key.enter, Key.tab]
        released = [KeyCode.from_char(c) for c in "12345678"] + [Key.space, Key.backspace]
        while not done.is_set():
            try:
                for press, release in zip(keys, released):
                    source.on_press(press)
                    source.on_press(Key.shift)
                    source.on_release(release)
            except Exception as exc:  # noqa: BLE001 - what pynput would see
                failures.append(type(exc).__name__)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=hooks)
    try:
        thread.start()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            source.forget_held_keys()
    finally:
        done.set()
        thread.join(10)
        sys.setswitchinterval(switch)
    assert failures == [] and source.key_errors == 0
    while not source.queue.empty():
        source.queue.get_nowait()
    source.maxsize = 100
    source.on_press(KeyCode.from_char("a"))
    source.forget_held_keys()
    source.on_press(KeyCode.from_char("a"))
    first, again = source.queue.get_nowait(), source.queue.get_nowait()
    assert not again.repeat and again.press_id != first.press_id


def test_a_key_callback_that_fails_says_so_without_the_key(caplog):
    """Whatever fails inside a key callback stays there: the key is skipped and counted, the
    first failure is logged by its kind only (a KeyError's message is the key), and pynput,
    which would log the message and stop the listener, never sees it."""
    from pynput.keyboard import KeyCode

    from agent.sources.live import LiveSource

    source = LiveSource()

    def fails(ident, cls):
        raise KeyError(("char", "SECRET-q"))

    source._tracker.press_identified = fails
    with caplog.at_level(logging.DEBUG):
        source.on_press(KeyCode.from_char("q"))
        source.on_press(KeyCode.from_char("q"))
    assert source.key_errors == 2 and source.queue.empty()
    assert "KeyError" in caplog.text and caplog.text.count("could not be handled") == 1
    assert "SECRET" not in caplog.text and "'q'" not in caplog.text


def test_live_callbacks_build_the_events_the_pipeline_expects():
    """pynput's callbacks (the Windows and macOS hooks) through LiveSource: every field of every
    Event, as the NamedTuple would build it, pairs by key, and the key itself nowhere."""
    from pynput.keyboard import KeyCode
    from pynput.mouse import Button as MouseButton

    from agent.sources.live import LiveSource

    source = LiveSource()
    source.on_press(KeyCode.from_char("A"))
    source.on_press(KeyCode.from_char(" "), injected=True)
    source.on_release(KeyCode.from_char("a"))
    source.on_release(KeyCode.from_char(" "), injected=True)
    source.on_move(3, 4)
    source.on_click(5, 6, MouseButton.left, True)
    source.on_click(5, 6, MouseButton.left, False, injected=True)
    source.on_scroll(7, 8, 0, -1)
    events = []
    while not source.queue.empty():
        events.append(source.queue.get_nowait())
    assert [e._replace(t_ns=0) for e in events] == [
        Event(0, Kind.DOWN, KeyClass.LEFT_LETTER, 0),
        Event(0, Kind.DOWN, KeyClass.SPACE, 1, injected=True),
        Event(0, Kind.UP, KeyClass.LEFT_LETTER, 0),
        Event(0, Kind.UP, KeyClass.SPACE, 1, injected=True),
        Event(0, Kind.MOVE, x=3.0, y=4.0),
        Event(0, Kind.PRESS, x=5.0, y=6.0, button=Button.LEFT),
        Event(0, Kind.RELEASE, x=5.0, y=6.0, button=Button.LEFT, injected=True),
        Event(0, Kind.SCROLL, x=7.0, y=8.0),
    ]
    assert all(type(e) is Event and type(e.injected) is bool for e in events)
    times = [e.t_ns for e in events]
    assert times == sorted(times)
    assert source.timer.count == len(events)
