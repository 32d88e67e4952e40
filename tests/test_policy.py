"""Settings layers and validation: defaults < user < managed; bad values named, never fatal."""

import pytest

from agent import policy
from agent.policy import Policy, PolicyError, merge, validate


def test_defaults_are_safe():
    p = Policy()
    assert p.action == "lock" and p.injection_action == "lock" and p.sensitivity == 1.0


def test_managed_keys_win_and_are_reported():
    s = merge([("user", {"action": "observe", "pause_minutes": 30}, False),
               ("managed", {"action": "lock", "allow_quit": False}, True)])
    assert s.policy.action == "lock" and s.policy.pause_minutes == 30
    assert s.policy.allow_quit is False
    assert s.managed == {"action", "allow_quit"}


@pytest.mark.parametrize("key, value, message", [
    ("action", "explode", "must be one of observe, alert, lock"),
    ("sensitivity", 9, "outside 0.5..2.0"),
    ("sensitivity", "high", "not a number"),
    ("allow_pause", "yes", "not true or false"),
    ("locker_command", "i3lock", "list of strings"),
    ("locker_command", [], "list of strings"),
    ("injection_allow_keyboards", "Yubico*", "list of keyboard names or patterns"),
    ("injection_allow_keyboards", ["Yubico*", ""], "list of keyboard names or patterns"),
    ("injection_allow_keyboards", [3], "list of keyboard names or patterns"),
    ("colour", "red", "unknown setting 'colour'"),
])
def test_bad_values_are_named_with_key_value_and_source(key, value, message):
    with pytest.raises(PolicyError, match=message) as info:
        validate(key, value, "/etc/cadence/policy.toml")
    assert "/etc/cadence/policy.toml" in str(info.value)


def test_keyboards_to_allow_are_a_list_that_may_be_emptied():
    assert validate("injection_allow_keyboards", ["Yubico YubiKey*", "*scanner*"], "user") == \
        ("Yubico YubiKey*", "*scanner*")
    s = merge([("user", {"injection_allow_keyboards": ["Yubico*"]}, False),
               ("managed", {"injection_allow_keyboards": []}, True)])  # IT empties it
    assert s.policy.injection_allow_keyboards == () and not s.errors


def test_a_bad_value_keeps_the_lower_layer_and_is_reported():
    s = merge([("user", {"sensitivity": 1.5}, False),
               ("managed", {"sensitivity": 7, "action": "alert"}, True)])
    assert s.policy.sensitivity == 1.5 and s.policy.action == "alert"
    assert len(s.errors) == 1 and "sensitivity = 7" in s.errors[0]


def test_files_are_read_and_broken_files_reported(tmp_path):
    user = tmp_path / "settings.toml"
    user.write_text('action = "alert"\nlocker_command = ["i3lock", "-n"]\n')
    managed = tmp_path / "policy.toml"
    managed.write_text("this is not = = toml")
    values, errors = policy.read_toml(managed)
    s = policy.load(user, managed=(str(managed), values, errors))
    assert s.policy.action == "alert" and s.policy.locker_command == ("i3lock", "-n")
    assert s.errors and str(managed) in s.errors[0]
    assert policy.load(tmp_path / "missing.toml", managed=("m", {}, [])).policy == Policy()


def test_a_whole_number_setting_refuses_a_fraction_instead_of_cutting_it():
    assert validate("enrol_keystrokes", 1000.0, "x") == 1000
    with pytest.raises(PolicyError, match=r"enrol_keystrokes = 1000\.7 is not a whole number"):
        validate("enrol_keystrokes", 1000.7, "x")


def test_registry_style_dwords_are_booleans():
    assert validate("allow_pause", 0, "HKLM") is False


def test_an_invalid_managed_value_keeps_the_last_valid_one(tmp_path):
    last_good = tmp_path / "data" / "policy.last-good.json"
    user = tmp_path / "settings.toml"
    user.write_text('action = "observe"\n')
    first = policy.load(user, managed=("m", {"action": "lock", "sensitivity": 1.5}, []),
                        last_good=last_good)
    assert first.policy.action == "lock" and last_good.exists()
    typo = policy.load(user, managed=("m", {"action": "lokc", "sensitivity": 1.5}, []),
                       last_good=last_good)
    assert typo.policy.action == "lock"  # not the user's "observe"
    assert "action" in typo.managed
    assert any("'lokc'" in e and "kept the last valid value" in e for e in typo.errors)
    broken = policy.load(user, managed=("m", {}, ["m: cannot read"]), last_good=last_good)
    assert broken.policy.action == "lock" and broken.policy.sensitivity == 1.5
    assert oct(last_good.stat().st_mode & 0o777) == "0o600"
