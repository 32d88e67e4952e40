"""`cadence eval keystroke` on real Aalto participants, and the privacy of a full dataset run."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from agent.events import Event
from agent.features.keystroke import window_vector
from agent.sources.datasets import aalto


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, timeout=600)


def sentences(folder: Path) -> set[str]:
    """The typed text of the dataset files (read here only to prove it never comes out)."""
    texts = set()
    for path in folder.glob("keystrokes/*_keystrokes.txt"):
        for line in path.read_bytes().decode("utf-8", "replace").splitlines()[1:]:
            fields = line.split("\t")
            if len(fields) == 9:
                texts.update(t for t in fields[2:4] if len(t) >= 12)
    return texts


def test_eval_keystroke_json_on_twenty_users(aalto_dir):
    out = run_cli("eval", "keystroke", str(aalto_dir), "--format", "aalto", "--users", "20",
                  "--seed", "3", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("users", "skipped", "eer_mean", "eer_median", "eer_mean_k2", "eer_mean_k5",
                "fit_ms_mean", "score_ms_mean"):
        assert key in result
    assert result["users"] + result["skipped"] == 20
    assert result["impostors_per_user"] == result["users"] - 1
    # A model that learned nothing would sit near 50%; this one must tell people apart.
    assert result["eer_mean"] < 0.15 and result["eer_mean_k5"] <= result["eer_mean"]
    again = json.loads(run_cli("eval", "keystroke", str(aalto_dir), "--format", "aalto",
                               "--users", "20", "--seed", "3", "--json").stdout)
    assert again["eer_mean"] == result["eer_mean"]  # deterministic for a seed
    human = run_cli("eval", "keystroke", str(aalto_dir), "--format", "aalto", "--users", "20",
                    "--enrol", "5")
    assert human.returncode == 0 and "EER k=1" in human.stdout
    text = out.stdout + out.stderr + human.stdout + human.stderr
    leaked = [s for s in sentences(aalto_dir) if s in text]
    assert not leaked


def test_eval_keystroke_on_recordings_of_classes(tmp_path, aalto_dir):
    from agent.sources import replay
    people, _ = aalto.load(aalto_dir, users=6, seed=1)
    for person in people:
        for i, session in enumerate(person.sessions):
            replay.write_session(tmp_path / person.user / f"{i:02d}.csv", session)
    out = run_cli("eval", "keystroke", str(tmp_path), "--format", "recording", "--json")
    direct = run_cli("eval", "keystroke", str(aalto_dir), "--format", "aalto", "--users", "6",
                     "--seed", "1", "--json")
    # A recording of the same events scores exactly as the dataset does.
    assert json.loads(out.stdout)["eer_mean"] == json.loads(direct.stdout)["eer_mean"]


def test_full_dataset_run_keeps_no_character_past_the_loader(aalto_dir):
    people, report = aalto.load(aalto_dir)
    assert report.files >= 20

    def walk(obj):
        if isinstance(obj, Event):
            assert all(not isinstance(v, (str, bytes)) for v in obj), obj
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item)
        elif isinstance(obj, np.ndarray):
            assert obj.dtype.kind in "fiub"
        else:
            assert not isinstance(obj, (str, bytes)), type(obj)

    for person in people:
        assert person.user.isdigit()  # the participant's number, nothing typed
        walk(person.sessions)
        walk([window_vector(s) for s in person.sessions])
    assert all(isinstance(k, str) and not isinstance(v, str)
               for k, v in report.as_dict()["skipped_by_reason"].items())


def test_eval_names_a_missing_folder_and_exits_2(tmp_path):
    out = run_cli("eval", "keystroke", str(tmp_path / "missing"), "--format", "aalto")
    assert out.returncode == 2 and "no such folder" in out.stderr
