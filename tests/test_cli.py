"""The `cadence` commands that manage the profile, with no agent running."""

import importlib
import os
import subprocess
import sys

import pytest

from agent.store import ProfileStore


def cadence(home, *args, stdin=subprocess.DEVNULL):
    env = {**os.environ, "CADENCE_HOME": str(home),
           "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    return subprocess.run([sys.executable, "-m", "agent", *args], env=env, stdin=stdin,
                          capture_output=True, text=True, timeout=60)


def test_forget_needs_confirmation_then_deletes_profile_and_key(tmp_path, monkeypatch):
    import keyring
    from keyring.backends import fail
    from agent.model.profile import Profile
    from test_features_model import profile_blob
    monkeypatch.setattr(keyring, "get_keyring", lambda: fail.Keyring())
    store = ProfileStore(tmp_path / "data")
    store.save(Profile.from_json(profile_blob()))
    assert store.path.exists() and store.key_path.exists()
    refused = cadence(tmp_path, "forget")
    assert refused.returncode == 2 and "--yes" in refused.stderr and store.path.exists()
    done = cadence(tmp_path, "forget", "--yes")
    assert done.returncode == 0 and "deleted" in done.stdout
    assert not store.path.exists() and not store.key_path.exists()


def test_enroll_without_restart_explains_and_status_says_not_running(tmp_path):
    out = cadence(tmp_path, "enroll")
    assert out.returncode == 2 and "--restart" in out.stderr
    assert cadence(tmp_path, "enroll", "--restart").returncode == 0
    status = cadence(tmp_path, "status")
    assert status.returncode == 3 and "not running" in status.stdout


def test_numbers_out_of_range_are_refused_by_name_before_anything_runs(tmp_path):
    """A sample of no users, a negative seed, enrolment that would reach the genuine tests, an
    enrolment target outside the policy's range: each named, with what is allowed."""
    data = tmp_path / "recordings"
    data.mkdir()
    cases = [
        (["eval", "injection", str(data), "--format", "recording", "--users", "0"],
         "--users", "0 is below 1"),
        (["eval", "injection", str(data), "--format", "recording", "--seed", "-1"],
         "--seed", "-1 is below 0"),
        (["eval", "keystroke", str(data), "--format", "recording", "--enrol", "0"],
         "--enrol", "0 is below 1"),
        (["eval", "continuous", str(data), "--format", "recording", "--users", "many"],
         "--users", "'many' is not a whole number"),
        (["run", "--no-tray", "--enrol-keystrokes", "5"],
         "--enrol-keystrokes", "outside 200..20000"),
    ]
    for args, option, why in cases:
        out = cadence(tmp_path, *args)
        assert out.returncode == 2 and option in out.stderr and why in out.stderr, out.stderr


@pytest.mark.parametrize("protocol", ["keystroke", "continuous"])
def test_enrolment_reaching_the_genuine_tests_is_refused(protocol):
    module = importlib.import_module(f"agent.evaluation.{protocol}")
    with pytest.raises(ValueError, match=r"enrol = 11: must be 1\.\.10 sessions"):
        module.evaluate([], enrol=11)


def test_an_eval_says_what_it_skipped_without_being_asked(tmp_path):
    """Malformed rows are skipped and counted; the count is said on stderr at the default log
    level (each row's file and line with -v), so a figure is never read off a dataset that
    silently lost rows."""
    user = tmp_path / "recordings" / "u1"
    user.mkdir(parents=True)
    rows = "".join(f"{i * 150},down,LEFT_LETTER,,,\n{i * 150 + 90},up,LEFT_LETTER,,,\n"
                   for i in range(30))
    (user / "s1.csv").write_text("t_ms,kind,key,x,y,button\n" + rows + "garbage,row\n")
    out = cadence(tmp_path, "eval", "injection", str(tmp_path / "recordings"),
                  "--format", "recording")
    assert out.returncode == 0, out.stderr
    assert "1 malformed row skipped" in out.stderr and "-v" in out.stderr
    assert "s1.csv:62" not in out.stderr
    verbose = cadence(tmp_path, "-v", "eval", "injection", str(tmp_path / "recordings"),
                      "--format", "recording")
    assert "s1.csv:62" in verbose.stderr


def test_a_profile_that_cannot_be_read_is_named_not_a_traceback(tmp_path):
    (tmp_path / "data" / "profile.enc").mkdir(parents=True)
    for args in (["doctor"], ["forget", "--yes"]):
        out = cadence(tmp_path, *args)
        assert "Traceback" not in out.stderr, out.stderr
        assert "profile.enc" in out.stdout + out.stderr


def test_enrol_keystrokes_on_the_command_line_does_not_override_a_managed_value(caplog):
    from agent.cli import with_enrolment
    from agent.policy import merge
    user = merge([("settings.toml", {"enrol_keystrokes": 2000}, False)])
    assert with_enrolment(user, 300).policy.enrol_keystrokes == 300
    assert with_enrolment(user, None) is user
    managed = merge([("settings.toml", {}, False), ("policy.toml", {"enrol_keystrokes": 5000}, True)])
    with caplog.at_level("WARNING", logger="cadence"):
        assert with_enrolment(managed, 300).policy.enrol_keystrokes == 5000
    assert "organisation's policy sets enrol_keystrokes" in caplog.text
