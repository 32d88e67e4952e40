"""The `cadence` commands that manage the profile, with no agent running."""

import os
import subprocess
import sys

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
