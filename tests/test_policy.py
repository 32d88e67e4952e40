"""Settings layers and validation: defaults < user < managed; bad values named, never fatal."""

import plistlib
import sys

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


def test_a_bad_user_value_keeps_the_default_and_is_reported():
    s = merge([("user", {"sensitivity": 7, "action": "alert"}, False)])
    assert s.policy.sensitivity == 1.0 and s.policy.action == "alert" and not s.managed
    assert len(s.errors) == 1 and "sensitivity = 7" in s.errors[0]


def test_a_bad_managed_value_never_hands_the_setting_to_the_user():
    s = merge([("user", {"sensitivity": 1.5, "action": "observe", "sinks": []}, False),
               ("managed", {"sensitivity": 7, "action": "alert", "sinks": "nope"}, True)])
    assert s.policy.sensitivity == 1.0 and s.policy.action == "alert"  # the default, not 1.5
    assert s.managed == {"sensitivity", "action", "sinks"}
    assert len(s.errors) == 2 and "sensitivity = 7" in s.errors[0]


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


def user_and_last_good(tmp_path, settings: str):
    """A user's settings.toml holding ``settings``, and where the last good policy goes."""
    user = tmp_path / "settings.toml"
    user.write_text(settings)
    return user, tmp_path / "data" / "policy.last-good.json"


def test_an_invalid_managed_value_keeps_the_last_valid_one(tmp_path):
    user, last_good = user_and_last_good(tmp_path, 'action = "observe"\n')
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


def test_a_managed_typo_at_first_deployment_is_the_default_not_the_users_value(tmp_path):
    """No last-good file yet: the user's "observe" must not win over the fleet's "lock"."""
    user, last_good = user_and_last_good(tmp_path, 'action = "observe"\nsensitivity = 1.5\n')
    s = policy.load(user, managed=("m", {"action": "Lock", "sensitivity": 0.7}, []),
                    last_good=last_good)
    assert s.policy.action == "lock" and s.policy.sensitivity == 0.7
    assert s.managed == {"action", "sensitivity"}
    assert any("action = 'Lock' must be one of observe, alert, lock" in e for e in s.errors)
    fixed = policy.load(user, managed=("m", {"action": "alert"}, []), last_good=last_good)
    assert fixed.policy.action == "alert" and not fixed.errors


@pytest.mark.parametrize("damage", ["truncated", "root-is-an-array", "bad-integer", "binary"])
def test_a_broken_managed_plist_is_a_policy_error_and_keeps_the_last_good(tmp_path, monkeypatch,
                                                                          damage):
    plist = tmp_path / "org.cadence.agent.plist"
    last_good = tmp_path / "data" / "policy.last-good.json"
    monkeypatch.setattr(policy, "MAC_POLICY", plist)
    monkeypatch.setattr(sys, "platform", "darwin")
    good = plistlib.dumps({"action": "alert", "sensitivity": 1.5})
    plist.write_bytes(good)
    assert policy.load(None, last_good=last_good).policy.action == "alert"
    plist.write_bytes({
        "truncated": good[:len(good) // 2],
        "root-is-an-array": plistlib.dumps(["action", "alert"]),
        "bad-integer": good.replace(b"<real>1.5</real>", b"<integer>SECRET</integer>"),
        "binary": b"bplist00" + b"\xff" * 40}[damage])
    s = policy.load(None, last_good=last_good)
    assert s.policy.action == "alert" and s.policy.sensitivity == 1.5 and "action" in s.managed
    assert s.errors and all(str(plist) in e for e in s.errors[:1])
    assert "cannot read" in s.errors[0] and "fix or remove the file" in s.errors[0]
    assert "SECRET" not in "\n".join(s.errors)
    monkeypatch.undo()


def test_a_token_pasted_into_token_env_or_token_file_is_never_shown():
    url = "https://hooks.example.org/in"
    sinks = [{"token_env": "s3cr3t-SECRET-tok3n"}, {"token_file": "SECRETtok3n0123456789"},
             {"token_file": 123456}, {"token_env": "HOOK_TOKEN"},
             {"token_file": "/etc/cadence/hook-token"}]
    s = merge([("policy", {"sinks": [{"type": "webhook", "name": f"hook{i}", "url": url, **sink}
                                     for i, sink in enumerate(sinks)]}, True)])
    errors = "\n".join(s.errors)
    assert "SECRET" not in errors and "123456" not in errors and len(s.errors) == 3
    assert "sinks[0].token_env = <hidden> must be the name of an environment variable" in errors
    assert "sinks[1].token_file = <hidden> must be the full path of a file" in errors
    assert "sinks[2].token_file = <hidden>" in errors
    assert [c.token_env or c.token_file for c in s.policy.sinks] == \
        ["HOOK_TOKEN", "/etc/cadence/hook-token"]
