"""Overhead of the resident agent (EVALUATION.md, "Overhead: cadence bench").

One run measures, with the agent's own code throughout:

In this process (the bench itself)
    ``events_per_s``   key events through :meth:`Pipeline.feed` while protecting (presses and
                       releases only; ``mixed_events_per_s`` counts the mouse moves too, which the
                       pipeline drops at once), ``score_ms_p99`` (one window: ``window_vector`` +
                       ``KeystrokeModel.score`` over the last 200 keystrokes), ``train_ms``
                       (RankShift fit on an enrolment of 20 windows, first fit in this process)
                       and ``train_import_s`` (importing pyod through ``agent.model.detector``).
In a child process running the real :class:`agent.runtime.Agent`
    The child starts ``protecting`` on a profile trained above and saved into a temporary
    ``CADENCE_HOME`` (key-file store: ``PYTHON_KEYRING_BACKEND=keyring.backends.fail.Keyring``;
    settings ``action = "observe"`` so a misjudged window never locks the machine). Phases, in
    one process, side by side: idle for ``duration`` s, then typing at 8 keys/s plus 60 mouse
    moves/s for ``duration`` s. From ``/proc/<pid>/stat`` (utime+stime) and
    ``/proc/<pid>/status`` (VmRSS) the bench reads ``cpu_idle_pct``, ``cpu_pct`` (% of one
    core) and ``rss_mb`` (end of the typing phase, while protecting); ``startup_s`` is from
    spawning the process to its first published status (``state.json``); with ``--x11``,
    ``tray_startup_s`` is from spawning ``cadence run`` (tray included, a separate process
    before the others) to its icon drawn in a tray host (trayer). ``idle_wakeups_per_s``
    is the process's voluntary context switches per second while idle, from the child's
    ``getrusage(RUSAGE_SELF)`` (all threads, including short-lived ones that
    ``/proc/<pid>/status`` misses: that file counts the main thread only); the per-thread split
    comes from ``/proc/<pid>/task/*/status``. The hook callback figures are
    :attr:`LiveSource.timer` samples (our own work inside each callback) taken in the child.

    Default mode: the child is :class:`Agent` with :class:`SyntheticSource`, a LiveSource whose
    ``start()`` runs a thread calling the real ``on_press``/``on_release``/``on_move`` with pynput
    key objects at a human rhythm (idle: the thread blocks). No display is used (the child runs
    without ``DISPLAY``, so it makes no X queries either).
    ``--x11``: the child is the real ``cadence run --no-tray`` (its pynput listeners) on an X
    server (a private Xvfb unless ``--display`` names one: keys are really typed into it), and
    this process types and moves through XTest (:class:`~agent.evaluation.xreplay.XTyper`).

Child protocol: the child writes a JSON snapshot (rusage, callback timer samples, dropped
events, state, heavy modules in ``sys.modules``, thread names) to a stats file on ``SIGUSR2``;
in the default mode ``SIGUSR1`` turns the synthetic input on and off. The child entry is
``python -m agent.evaluation.bench --child synthetic|cli STATS [-- cadence args]``.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

KEYS_PER_S = 8.0
MOVES_PER_S = 60.0
ENROL_KEYS = 1000          # 20 enrolment windows of 50 keystrokes
HEAVY = ("pyod", "numba", "scipy", "sklearn", "matplotlib")
WARMUP_S = 2.0
START_TIMEOUT_S = 60.0
SNAPSHOT_TIMEOUT_S = 15.0

_LETTERS = "etaoinshrdlucmfwypvbgkqjxz"
_FREQ = (12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.2, 2.4, 2.0,
         1.9, 1.0, 1.5, 2.0, 0.8, 0.1, 0.2, 0.2, 0.1)


class BenchError(RuntimeError):
    """The bench could not measure; the message says what happened."""


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- synthetic input
def typing_schedule(rng: random.Random, duration_s: float, keys_per_s: float = KEYS_PER_S,
                    t0: float = 0.0) -> list[tuple[float, int, str]]:
    """(time s, 0 press | 1 release, key) of human-like typing: words of English-frequency
    letters, spaces, some punctuation and backspaces; log-normal press-to-press gaps averaging
    ``1 / keys_per_s`` and log-normal holds around 95 ms. Keys are characters (``" "`` space,
    ``"\\b"`` backspace)."""
    sigma = 0.45
    mu = math.log(1.0 / keys_per_s) - sigma * sigma / 2
    presses: list[tuple[float, str]] = []
    t, word, previous = t0, 0, ""
    while t < t0 + duration_s:
        if word == 0:
            word = rng.randint(2, 8)
            key = " " if presses else rng.choices(_LETTERS, _FREQ)[0]
            if presses and rng.random() < 0.08:
                key = rng.choice(".,")
            elif presses and rng.random() < 0.04:
                key = "\b"
        else:
            key = rng.choices(_LETTERS, _FREQ)[0]
            while key == previous:
                key = rng.choices(_LETTERS, _FREQ)[0]
            word -= 1
        presses.append((t, key))
        previous = key
        t += rng.lognormvariate(mu, sigma) * (1.15 if key == " " else 1.0)
    out = []
    for i, (t, key) in enumerate(presses):
        hold = max(0.035, rng.lognormvariate(math.log(0.110 if key == " " else 0.095), 0.25))
        same_next = next((t2 for t2, k2 in presses[i + 1:i + 8] if k2 == key), None)
        if same_next is not None:
            hold = min(hold, 0.8 * (same_next - t))
        out += [(t, 0, key), (t + hold, 1, key)]
    return sorted(out, key=lambda e: (e[0], e[1]))  # every press is released


def move_schedule(rng: random.Random, duration_s: float, moves_per_s: float = MOVES_PER_S,
                  t0: float = 0.0) -> list[tuple[float, int, tuple[int, int]]]:
    """(time s, 2, (x, y)) mouse moves along a smooth wandering path on a 1280x800 screen."""
    out, t = [], t0
    step = 1.0 / moves_per_s
    phase = rng.random() * 6.28
    while t < t0 + duration_s:
        x = 640 + 500 * math.sin(0.7 * t + phase) + rng.uniform(-3, 3)
        y = 400 + 300 * math.sin(1.1 * t + 2 * phase) + rng.uniform(-3, 3)
        out.append((t, 2, (int(x), int(y))))
        t += step * rng.uniform(0.8, 1.2)
    return out


def input_schedule(rng: random.Random, duration_s: float, keys_per_s: float = KEYS_PER_S,
                   moves_per_s: float = MOVES_PER_S, t0: float = 0.0) -> list[tuple]:
    """Typing and mouse moves merged in time order."""
    merged = typing_schedule(rng, duration_s, keys_per_s, t0)
    if moves_per_s > 0:
        merged += move_schedule(rng, duration_s, moves_per_s, t0)
    return sorted(merged, key=lambda e: (e[0], e[1]))


def to_events(schedule: list[tuple]) -> list:
    """Schedule -> Events as :class:`LiveSource` makes them (classes via the same keymap)."""
    from agent.events import Event, Kind
    from agent.keymap import KeyTracker
    tracker, out = KeyTracker(), []
    for t, what, payload in schedule:
        t_ns = int(t * 1e9)
        if what == 0:
            cls, press_id, repeat = tracker.press(payload)
            out.append(Event(t_ns, Kind.DOWN, cls, press_id, repeat=repeat))
        elif what == 1:
            paired = tracker.release(payload)
            if paired is not None:
                out.append(Event(t_ns, Kind.UP, paired[0], paired[1]))
        else:
            out.append(Event(t_ns, Kind.MOVE, x=float(payload[0]), y=float(payload[1])))
    return out


def _sleep_until(due: float, stop: threading.Event | None = None) -> None:
    left = due - time.perf_counter()
    if left > 0:
        if stop is not None:
            stop.wait(left)
        else:
            time.sleep(left)


# --------------------------------------------------------------------------- in-process parts
def _percentile(values, q: float) -> float:
    import numpy as np
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else 0.0


def _bench_policy():
    from agent.policy import Policy
    return Policy(action="observe", injection_action="observe", enrol_keystrokes=ENROL_KEYS)


def train_profile(seed: int) -> tuple:
    """(profile, measurements): enrol through the learning Pipeline, fit RankShift, timed."""
    import numpy as np
    from agent.model.prior import cell_weights
    from agent.model.profile import KeystrokeModel, Profile
    from agent.pipeline import Pipeline, Train
    rng = random.Random(seed)
    learner = Pipeline(_bench_policy(), None, cell_weights())
    windows = None
    for event in to_events(typing_schedule(rng, 3 * ENROL_KEYS / KEYS_PER_S)):
        for effect in learner.feed(event):
            if isinstance(effect, Train):
                windows = effect.windows
        if windows is not None:
            break
    if windows is None:
        raise BenchError(f"synthetic enrolment did not train: {learner.quality}")
    if "pyod" in sys.modules:  # already imported here: time a clean import in a fresh process
        out = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); "
                              "import agent.model.detector; print(time.perf_counter() - t)"],
                             capture_output=True, text=True, timeout=120, check=True)
        import_s = float(out.stdout.strip())
        from agent.model.detector import RankShift
    else:
        started = time.perf_counter()
        from agent.model.detector import RankShift
        import_s = time.perf_counter() - started
    fits = []
    for _ in range(5):
        started = time.perf_counter()
        detector = RankShift().fit(windows)
        fits.append(time.perf_counter() - started)
    profile = Profile(KeystrokeModel.from_detector(detector))
    return profile, {"train_ms": round(1000 * fits[0], 2),
                     "train_ms_warm": round(1000 * float(np.median(fits[1:])), 2),
                     "train_import_s": round(import_s, 3), "train_windows": int(len(windows))}


def pipeline_throughput(profile, seed: int, keys: int = 6000) -> dict:
    """Events/s through Pipeline.feed while protecting, on the realistic mix of input."""
    from agent.model.prior import cell_weights
    from agent.pipeline import Pipeline
    events = to_events(input_schedule(random.Random(seed + 1), keys / KEYS_PER_S))
    key_events = [e for e in events if e.is_key]
    out = {}
    for name, stream in (("events_per_s", key_events), ("mixed_events_per_s", events)):
        pipe = Pipeline(_bench_policy(), _copy(profile), cell_weights())
        started = time.perf_counter()
        for event in stream:
            pipe.feed(event)
        elapsed = time.perf_counter() - started
        out[name] = round(len(stream) / elapsed)
        if name == "events_per_s":
            out["pipeline_state"] = pipe.state
            out["pipeline_verdict"] = pipe.last_verdict
            out["pipeline_adaptations"] = pipe.adaptations
    return out


def _copy(profile):
    from agent.model.profile import Profile
    return Profile.from_json(profile.to_json())


def scoring_latency(profile, seed: int, windows: int = 1000) -> dict:
    """ms to score one window of the last 200 keystrokes (window_vector + model.score)."""
    from agent.decision import ScoringWindow
    from agent.features.keystroke import window_vector
    from agent.model.prior import cell_weights
    size = ScoringWindow().size
    events = [e for e in to_events(typing_schedule(random.Random(seed + 2),
                                                   (size + windows) / KEYS_PER_S)) if e.is_key]
    downs = [i for i, e in enumerate(events) if e.kind == 0]
    model, weights = _copy(profile).keystroke, cell_weights()
    model.score(window_vector(events[:50])[None, :], weights)  # builds the rank table once
    times = []
    for w in range(min(windows, len(downs) - size - 1)):
        chunk = events[downs[w]:downs[w + size]]
        started = time.perf_counter()
        model.score(window_vector(chunk)[None, :], weights)
        times.append(time.perf_counter() - started)
    rebuilds = []
    for _ in range(50):  # after an adaptation the next score rebuilds the rank table
        model._table = None
        started = time.perf_counter()
        model.score(window_vector(chunk)[None, :], weights)
        rebuilds.append(time.perf_counter() - started)
    return {"score_ms_median": round(1000 * _percentile(times, 50), 3),
            "score_ms_p99": round(1000 * _percentile(times, 99), 3),
            "score_rebuild_ms_p99": round(1000 * _percentile(rebuilds, 99), 3),
            "score_windows": len(times)}


# --------------------------------------------------------------------------- /proc readings
def proc_cpu_s(pid: int) -> tuple[float, float]:
    """(utime + stime of the whole process: all threads, also exited ones; cutime + cstime of
    its reaped children, e.g. ``loginctl`` run by the lock check), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def proc_status(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) / 1024  # kB -> MB
        elif key in ("Threads", "voluntary_ctxt_switches"):
            out[key] = int(value)
    return out


def task_switches(pid: int) -> dict[int, int]:
    """Voluntary context switches of each live thread."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    out[int(task.name)] = int(line.split()[1])
        except OSError:
            pass
    return out


# --------------------------------------------------------------------------- the agent child
class AgentChild:
    """The agent process under test, its home, its stats file and its snapshots."""

    def __init__(self, mode: str, home: Path, env: dict, seed: int) -> None:
        self.mode, self.home, self.env = mode, home, env
        self.stats = home / "bench-stats.json"
        self.seq = 0
        cmd = [sys.executable, "-m", "agent.evaluation.bench", "--child", mode, str(self.stats)]
        cmd += ["--", "run", "--no-tray"] if mode == "cli" else [str(seed)]
        self.log = open(home / "agent.log", "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid

    def wait_started(self, state_path: Path) -> tuple[float, dict]:
        deadline = self.started + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the agent exited with {self.proc.returncode}: {self.tail()}")
            try:
                status = json.loads(state_path.read_text())
            except (OSError, ValueError):
                status = None
            if status and status.get("state") not in (None, "starting"):
                return time.monotonic() - self.started, status
            time.sleep(0.005)
        raise BenchError(f"the agent published no status within {START_TIMEOUT_S:.0f} s: "
                         f"{self.tail()}")

    def snapshot(self) -> dict:
        self.seq += 1
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                data = json.loads(self.stats.read_text())
                if data.get("seq") == self.seq:
                    return data
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise BenchError(f"the agent did not answer a stats request: {self.tail()}")

    def toggle_input(self) -> None:
        os.kill(self.pid, signal.SIGUSR1)

    def tail(self) -> str:
        try:
            return (self.home / "agent.log").read_text(errors="replace")[-2000:].strip() \
                or "(no output)"
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def _prepare_home(home: Path, profile) -> dict:
    from agent.evaluation.xreplay import XTEST_AS_HANDS
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYNPUT_BACKEND", "PYSTRAY_BACKEND", "DBUS_SESSION_BUS_ADDRESS")}
    env.update({"CADENCE_HOME": str(home), "MPLCONFIGDIR": str(home / "mpl"),
                "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
                "PYTHONDONTWRITEBYTECODE": "1"})
    (home / "config").mkdir(parents=True)
    (home / "config" / "settings.toml").write_text(
        'action = "observe"\ninjection_action = "observe"\n' + XTEST_AS_HANDS)
    blob = home / "profile.json"
    blob.write_bytes(profile.to_json())
    # the key is made in a child with the key-file store: never touch the user's OS keyring
    subprocess.run([sys.executable, "-m", "agent.evaluation.bench", "--child", "save", str(blob)],
                   env=env, check=True, timeout=120, capture_output=True)
    blob.unlink()
    return env


def _drive_x11(display: str, duration_s: float, seed: int) -> int:
    """Type and move through XTest for ``duration_s`` at the realistic rate; events sent."""
    from agent.evaluation.xreplay import XTyper
    from agent.keymap import KeyTracker
    typer = XTyper(display)
    tracker, sent = KeyTracker(), [0]
    done = threading.Event()

    def run() -> None:
        start = time.perf_counter()
        for t, what, payload in input_schedule(random.Random(seed + 3), duration_s):
            _sleep_until(start + t)
            if what == 0:
                cls, press_id, _ = tracker.press(payload)
                typer.press(cls, press_id)
            elif what == 1:
                paired = tracker.release(payload)
                if paired is not None:
                    typer.release(paired[1])
            else:
                typer.move(*payload)
            sent[0] += 1
        typer.close()
        done.set()

    worker = threading.Thread(target=run, name="bench-xtest", daemon=True)
    worker.start()
    if not done.wait(duration_s + 30):
        raise BenchError("XTest input did not finish in time (the X server may hang)")
    return sent[0]


def measure_tray_startup(profile, display: str) -> dict:
    """``tray_startup_s``: from spawning the real ``cadence run`` (tray included) to its icon
    drawn in a tray host (trayer) on ``display``: the first change of the tray area's pixels."""
    import shutil
    from agent.evaluation.xreplay import TrayHost
    home = Path(tempfile.mkdtemp(prefix="cadence-bench-tray-"))
    host = proc = None
    try:
        env = {**_prepare_home(home, profile), "DISPLAY": display}
        try:
            host = TrayHost(display)
        except RuntimeError as exc:
            return {"tray_startup_s": None, "tray_note": str(exc)}
        empty, settled = host.picture(), time.monotonic() + 10
        while time.monotonic() < settled:  # the host has drawn its (empty) area
            time.sleep(0.25)
            again = host.picture()
            if again == empty:
                break
            empty = again
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        while time.monotonic() - started < START_TIMEOUT_S and proc.poll() is None:
            if host.picture() != empty:
                return {"tray_startup_s": round(time.monotonic() - started, 3)}
            time.sleep(0.01)
        return {"tray_startup_s": None, "tray_note": "the tray icon did not appear within "
                f"{START_TIMEOUT_S:.0f} s" + (f" (the agent exited with {proc.returncode})"
                                               if proc.poll() is not None else "")}
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if host is not None:
            host.close()
        shutil.rmtree(home, ignore_errors=True)


def measure_agent(profile, duration_s: float, seed: int, x11: bool = False,
                  display: str | None = None) -> dict:
    """Start-up, idle and typing phases of one agent process (see the module docstring)."""
    import shutil
    home = Path(tempfile.mkdtemp(prefix="cadence-bench-"))
    xvfb = child = None
    try:
        env = _prepare_home(home, profile)
        if x11:
            if display is None:
                from agent.evaluation.xreplay import Xvfb
                try:
                    xvfb = Xvfb(first=80)
                except RuntimeError as exc:
                    raise BenchError(f"--x11 needs Xvfb or --display: {exc}") from None
                display = xvfb.name
            env["DISPLAY"] = display
            env.pop("WAYLAND_DISPLAY", None)
        else:
            for name in ("DISPLAY", "WAYLAND_DISPLAY"):
                env.pop(name, None)
            env.update({"PYNPUT_BACKEND": "dummy", "PYSTRAY_BACKEND": "dummy"})
        tray = {}
        if x11:
            _log("start-up to a visible tray icon")
            tray = measure_tray_startup(profile, display)
        _log(f"starting the agent ({'cadence run --no-tray on ' + display if x11 else 'synthetic input'})")
        child = AgentChild("cli" if x11 else "synthetic", home, env, seed)
        startup_s, status = child.wait_started(home / "run" / "state.json")
        if status.get("state") != "protecting":
            raise BenchError(f"the agent is {status.get('state')} ({status.get('reason')}), "
                             f"not protecting: {child.tail()}")
        time.sleep(WARMUP_S)

        _log(f"idle phase: {duration_s:g} s, no input")
        a, cpu_a, tasks_a, t_a = child.snapshot(), proc_cpu_s(child.pid), \
            task_switches(child.pid), time.monotonic()
        time.sleep(duration_s)
        cpu_b, tasks_b, t_b = proc_cpu_s(child.pid), task_switches(child.pid), time.monotonic()
        idle_status = proc_status(child.pid)
        b = child.snapshot()

        rate = f"{KEYS_PER_S:g} keys/s + {MOVES_PER_S:g} moves/s"
        _log(f"typing phase: {duration_s:g} s at {rate}" + (" through XTest" if x11 else ""))
        cpu_c, t_c = proc_cpu_s(child.pid), time.monotonic()
        if x11:
            sent = _drive_x11(display, duration_s, seed)
            time.sleep(0.3)  # let the last events reach the hooks
        else:
            child.toggle_input()
            time.sleep(duration_s)
        cpu_d, t_d = proc_cpu_s(child.pid), time.monotonic()
        typing_status = proc_status(child.pid)
        if not x11:
            child.toggle_input()
        c = child.snapshot()
        if not x11:
            sent = c["generated"]
        state = json.loads((home / "run" / "state.json").read_text())
    finally:
        if child is not None:
            child.stop()
        if xvfb is not None:
            xvfb.close()
        shutil.rmtree(home, ignore_errors=True)

    idle_s = b["t"] - a["t"]
    names = {int(k): v for k, v in b["threads"].items()}
    by_thread: dict[str, float] = {}
    for tid, count in tasks_b.items():
        name = names.get(tid, f"tid-{tid}")
        by_thread[name] = round(by_thread.get(name, 0) + (count - tasks_a.get(tid, 0))
                                / (t_b - t_a), 2)
    samples = c["callback_ns"]
    return {
        "startup_s": round(startup_s, 3),
        "cpu_idle_pct": round(100 * sum(map(_minus, cpu_b, cpu_a)) / (t_b - t_a), 3),
        "cpu_pct": round(100 * sum(map(_minus, cpu_d, cpu_c)) / (t_d - t_c), 3),
        "cpu_idle_children_pct": round(100 * (cpu_b[1] - cpu_a[1]) / (t_b - t_a), 3),
        "cpu_children_pct": round(100 * (cpu_d[1] - cpu_c[1]) / (t_d - t_c), 3),
        "idle_wakeups_per_s": round((b["rusage"]["nvcsw"] - a["rusage"]["nvcsw"]) / idle_s, 2),
        "idle_involuntary_switches_per_s": round(
            (b["rusage"]["nivcsw"] - a["rusage"]["nivcsw"]) / idle_s, 2),
        "idle_wakeups_by_thread": by_thread,
        "rss_mb": round(typing_status["VmRSS"], 1),
        "rss_idle_mb": round(idle_status["VmRSS"], 1),
        "rss_peak_mb": round(typing_status["VmHWM"], 1),
        "rss_anon_mb": round(typing_status["RssAnon"], 1),
        "rss_file_mb": round(typing_status["RssFile"], 1),
        "threads": typing_status["Threads"],
        "callback_us_median": round(_percentile(samples, 50) / 1000, 2),
        "callback_us_p99": round(_percentile(samples, 99) / 1000, 2),
        "callback_us_max": round(max(samples, default=0) / 1000, 2),
        "callback_samples": len(samples),
        "hook_events": c["callback_count"],
        "input_events_sent": sent,
        "dropped_events": c["dropped"],
        "heavy_modules_loaded": c["heavy_modules"],
        "modules_loaded": c["modules"],
        "state": state.get("state"),
        "verdict": state.get("verdict"),
        "key_protection": state.get("key_protection"),
        **tray,
    }


def _minus(a: float, b: float) -> float:
    return a - b


def run(duration_s: float = 60.0, seed: int = 0, x11: bool = False,
        display: str | None = None) -> dict:
    """The whole bench; one dict of figures (see EVALUATION.md)."""
    if not sys.platform.startswith("linux"):
        raise BenchError("cadence bench reads /proc: Linux only")
    if duration_s <= 0:
        raise BenchError("--duration must be positive")
    os.environ.setdefault("MPLCONFIGDIR", str(Path(tempfile.gettempdir()) / "cadence-mpl"))
    import platform
    _log("training a profile on synthetic typing")
    profile, result = train_profile(seed)
    _log("pipeline throughput and scoring latency")
    result.update(pipeline_throughput(profile, seed))
    result.update(scoring_latency(profile, seed))
    result.update(measure_agent(profile, duration_s, seed, x11=x11, display=display))
    result.update({"mode": "x11" if x11 else "synthetic", "duration_s": duration_s, "seed": seed,
                   "keys_per_s": KEYS_PER_S, "moves_per_s": MOVES_PER_S,
                   "cpus": os.cpu_count(), "python": platform.python_version()})
    return result


def summary_lines(r: dict) -> list[str]:
    return [
        f"hook callback (our work): median {r['callback_us_median']:.1f} us, "
        f"p99 {r['callback_us_p99']:.1f} us, max {r['callback_us_max']:.1f} us "
        f"({r['callback_samples']} samples)",
        f"pipeline: {r['events_per_s']:,} key events/s ({r['mixed_events_per_s']:,}/s with "
        f"mouse moves); scoring a window: p99 {r['score_ms_p99']:.2f} ms "
        f"(median {r['score_ms_median']:.2f} ms)",
        f"training: {r['train_ms']:.1f} ms on {r['train_windows']} windows "
        f"(+ {r['train_import_s']:.2f} s importing pyod)",
        f"agent process ({r['state']}): RSS {r['rss_mb']:.1f} MB "
        f"(anon {r['rss_anon_mb']:.1f}, file {r['rss_file_mb']:.1f}); start-up {r['startup_s']:.2f} s"
        + (f" to a published status, {r['tray_startup_s']:.2f} s to a visible tray icon"
           if r.get("tray_startup_s") is not None else " to a published status"),
        f"CPU at {r['keys_per_s']:g} keys/s + {r['moves_per_s']:g} moves/s: {r['cpu_pct']:.2f}% "
        f"of a core (idle {r['cpu_idle_pct']:.2f}%) over {r['duration_s']:g} s, including "
        f"its child processes ({r['cpu_children_pct']:.2f}%, idle {r['cpu_idle_children_pct']:.2f}%)",
        f"idle wake-ups: {r['idle_wakeups_per_s']:.2f}/s "
        + ", ".join(f"{k} {v:g}" for k, v in sorted(r['idle_wakeups_by_thread'].items())),
        f"events: {r['input_events_sent']} sent, {r['hook_events']} through the hooks, "
        f"{r['dropped_events']} dropped; heavy modules loaded: "
        f"{', '.join(r['heavy_modules_loaded']) or 'none'}",
    ]


# --------------------------------------------------------------------------- child side
def _synthetic_source_class():
    from agent.sources.live import LiveSource

    class SyntheticSource(LiveSource):
        """A LiveSource whose 'listener' is a thread calling the real callbacks with pynput
        key objects at the realistic rate while input is on; while off it blocks."""

        def __init__(self, seed: int) -> None:
            super().__init__()
            self.seed = seed
            self.input_on = threading.Event()
            self.generated = 0
            self._quit = threading.Event()
            self._thread: threading.Thread | None = None

        def start(self) -> None:
            self.forget_held_keys()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._generate, daemon=True,
                                                name="bench-input")
                self._thread.start()

        def alive(self) -> bool:
            return self._thread is not None and self._thread.is_alive()

        def stop(self) -> None:
            self._quit.set()
            self.input_on.set()

        def _generate(self) -> None:
            from pynput.keyboard import Key, KeyCode
            from agent.events import KeyClass
            from agent.keymap import classify
            keys = {c: KeyCode.from_char(c) for c in _LETTERS + ".,"}
            for char, name in ((" ", "space"), ("\b", "backspace")):
                named = getattr(Key, name)  # pynput's dummy backend aliases every Key member
                keys[char] = named if classify(named) != KeyClass.MODIFIER else \
                    KeyCode.from_char(char)
            rng = random.Random(self.seed + 4)
            while not self._quit.is_set():
                self.input_on.wait()
                start = time.perf_counter()
                for t, what, payload in input_schedule(rng, 10.0):
                    _sleep_until(start + t, self._quit)
                    if not self.input_on.is_set() or self._quit.is_set():
                        break
                    if what == 0:
                        self.on_press(keys[payload])
                    elif what == 1:
                        self.on_release(keys[payload])
                    else:
                        self.on_move(*payload)
                    self.generated += 1

    return SyntheticSource


def _snapshot(agent, path: Path, seq: list) -> None:
    seq[0] += 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    source = agent.source
    data = {
        "seq": seq[0], "t": time.monotonic(),
        "rusage": {"nvcsw": usage.ru_nvcsw, "nivcsw": usage.ru_nivcsw,
                   "utime": usage.ru_utime, "stime": usage.ru_stime},
        "threads": {t.native_id: t.name for t in threading.enumerate()},
        "callback_ns": source.timer.recent(), "callback_count": source.timer.count,
        "dropped": source.dropped, "generated": getattr(source, "generated", 0),
        "state": agent.pipeline.state if agent.pipeline else None,
        "heavy_modules": [m for m in HEAVY if m in sys.modules],
        "modules": len(sys.modules),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _child(argv: list[str]) -> int:
    mode, target = argv[0], Path(argv[1])
    if mode == "save":
        from agent.model.profile import Profile
        from agent.store import ProfileStore
        from agent.system.paths import default_paths, private_dir
        ProfileStore(private_dir(default_paths().data)).save(Profile.from_json(target.read_bytes()))
        return 0
    seq, found = [0], []

    def find_agent():
        if not found:
            import gc
            from agent.runtime import Agent
            found.extend(o for o in gc.get_objects() if isinstance(o, Agent))
        return found[0]

    signal.signal(signal.SIGUSR2, lambda *_: _snapshot(find_agent(), target, seq))
    if mode == "cli":  # the real `cadence run ...`, plus the stats handler above
        from agent.cli import main
        return main(argv[argv.index("--") + 1:])
    # synthetic: the real Agent, as `cadence run --no-tray` runs it, on SyntheticSource
    from agent import policy
    from agent.runtime import Agent
    from agent.system.paths import default_paths

    class BenchAgent(Agent):
        def _start_hooks(self):  # no display here: start the synthetic "hooks" regardless
            self.source.start()
            self._hook_events_at = time.monotonic()
            return None

    paths = default_paths()
    source = _synthetic_source_class()(int(argv[2]))
    agent = BenchAgent(paths, policy.load(paths.settings), source=source)
    found.append(agent)
    signal.signal(signal.SIGUSR1, lambda *_: (source.input_on.clear() if source.input_on.is_set()
                                              else source.input_on.set()))
    agent.start()
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    try:
        agent.wait_stopped()  # as cmd_run's no-tray loop
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        raise SystemExit(_child(sys.argv[2:]))
    print("usage: cadence bench [--json] [--x11] [--duration S] [--seed N]", file=sys.stderr)
    raise SystemExit(2)
