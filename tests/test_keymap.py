"""The privacy boundary: a key becomes a coarse class, and nothing past it can say which key."""

import enum
import string

import pytest
from hypothesis import given, strategies as st
from pynput.keyboard import KeyCode, _base

from agent import keymap
from agent.events import Event, KeyClass, Kind
from agent.keymap import KeyTracker, classify

PYNPUT_KEY_NAMES = list(_base.Key.__members__)
# A stand-in with pynput's real names as distinct members (the dummy backend aliases them).
RealNamedKey = enum.Enum("Key", {name: i for i, name in enumerate(PYNPUT_KEY_NAMES)})

EVENT_FIELD_TYPES = {
    "t_ns": int, "kind": Kind, "key": (KeyClass, type(None)), "press_id": int,
    "x": float, "y": float, "injected": bool, "repeat": bool,
}


def assert_no_identity(event: Event) -> None:
    for name, kinds in EVENT_FIELD_TYPES.items():
        assert isinstance(getattr(event, name), kinds), name
    assert not any(isinstance(v, str) for v in event)
    assert set(Event._fields) == set(EVENT_FIELD_TYPES) | {"button"}


def events_for(key) -> list[Event]:
    tracker = KeyTracker()
    cls, press_id, repeat = tracker.press(key)
    down = Event(1_000_000, Kind.DOWN, cls, press_id, repeat=repeat)
    paired = tracker.release(key)
    assert paired is not None
    up = Event(2_000_000, Kind.UP, paired[0], paired[1])
    return [down, up]


def test_every_named_pynput_key_maps_to_a_class_and_leaves_no_identity():
    assert len(PYNPUT_KEY_NAMES) > 40
    for member in RealNamedKey:
        for key in (member, f"Key.{member.name}"):
            for e in events_for(key):
                assert_no_identity(e)


@given(st.characters())
def test_every_character_keycode_leaves_no_identity(char):
    for key in (KeyCode.from_char(char), char):
        for e in events_for(key):
            assert_no_identity(e)


@given(st.integers(min_value=0, max_value=255), st.sampled_from(["win32", "darwin", "linux"]))
def test_every_vk_and_browser_keycode_maps_to_a_class(code, platform):
    assert isinstance(keymap.from_vk(code, platform), KeyClass)
    assert isinstance(keymap.from_browser_keycode(code), KeyClass)
    for key in (code, KeyCode.from_vk(code), f"<{code}>"):
        for e in events_for(key):
            assert_no_identity(e)


def test_classes_with_printable_characters_hold_at_least_three():
    members: dict[KeyClass, set[str]] = {}
    for char in string.printable:
        if char.isprintable():
            members.setdefault(keymap.from_char(char), set()).add(char)
    for cls, chars in members.items():
        if cls is not KeyClass.SPACE:  # the separator: reveals word lengths, never letters
            assert len(chars) >= 3, cls
    assert members[KeyClass.SPACE] == {" "}


def test_classes_are_coarse_and_layout_level():
    assert len(KeyClass) == 10
    assert classify("a") == classify("A") == classify(KeyCode.from_char("s")) == KeyClass.LEFT_LETTER
    assert classify("j") == KeyClass.RIGHT_LETTER
    assert classify("Key.space") == classify(" ") == KeyClass.SPACE
    assert classify("Key.shift_r") == KeyClass.MODIFIER
    assert classify("Key.left") == KeyClass.NAVIGATION
    assert classify("Key.f5") == KeyClass.OTHER
    assert classify(KeyCode.from_char("\x01")) == KeyClass.LEFT_LETTER  # Ctrl+A on Windows
    assert classify(84) == KeyClass.LEFT_LETTER  # browser keyCode of T
    assert classify(190) == KeyClass.PUNCTUATION
    assert classify("DIGIT") == KeyClass.DIGIT


def test_release_of_shifted_letter_pairs_by_key_not_character():
    tracker = KeyTracker()
    _, shift, _ = tracker.press("Key.shift")
    _, h, _ = tracker.press(KeyCode.from_char("H"))
    assert tracker.release(KeyCode.from_char("h")) == (KeyClass.RIGHT_LETTER, h)
    assert tracker.release("Key.shift") == (KeyClass.MODIFIER, shift)


def test_release_reported_as_another_character_closes_the_oldest_press():
    tracker = KeyTracker()
    _, bang, _ = tracker.press(KeyCode.from_char("!"))
    assert tracker.release(KeyCode.from_char("1"))[1] == bang
    assert tracker.release(KeyCode.from_char("1")) is None


def test_auto_repeat_is_marked_and_keeps_the_press_id():
    tracker = KeyTracker()
    first = tracker.press("a")
    again = tracker.press("a")
    assert not first[2] and again[2] and again[1] == first[1]
    assert tracker.release("a")[1] == first[1]


def test_class_name_recordings_pair_first_in_first_out():
    tracker = KeyTracker()
    a = tracker.press("LEFT_LETTER")[1]
    b = tracker.press("LEFT_LETTER")[1]
    assert a != b
    assert tracker.release("LEFT_LETTER")[1] == a
    assert tracker.release("LEFT_LETTER")[1] == b


def test_presses_never_released_are_forgotten():
    tracker = KeyTracker(max_held=4)
    for char in "qwertyuiop":
        tracker.press(char)
    assert len(tracker._held) + len(tracker._anonymous) <= 4


@pytest.mark.parametrize("text", ["secret", "<\u00b2>", "<\u2460\u2461>", "<\u0663x>"])
def test_bad_key_name_error_does_not_echo_the_key(text):
    """Digits Python's isdigit accepts but int does not (superscripts, circled numbers) too."""
    with pytest.raises(ValueError) as raised:
        classify(text)
    assert text[1:-1] not in str(raised.value) and text not in str(raised.value)
