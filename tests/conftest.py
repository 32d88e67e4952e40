"""Shared fixtures. Datasets come from $CADENCE_DATA (default: ../shared/data beside the repo);
where an archive is absent the tests that need it skip and say what to download."""

from __future__ import annotations

import os
import time
import tarfile
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("PYNPUT_BACKEND", "dummy")
os.environ.setdefault("PYSTRAY_BACKEND", "dummy")
os.environ.setdefault("MPLCONFIGDIR", "/tmp/cadence-mpl")

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CADENCE_DATA", REPO.parent / "shared" / "data"))

DOWNLOADS = {
    "aalto-136m-dev": "the Aalto 136M Keystrokes data (https://userinterfaces.aalto.fi/136Mkeystrokes)",
    "balabit-mouse-train": "the Balabit Mouse Dynamics Challenge data "
                           "(https://github.com/balabit/Mouse-Dynamics-Challenge)",
}


def _unpack(name: str, tmp_path_factory) -> Path:
    archive = DATA / f"{name}.tar.xz"
    if not archive.exists():
        pytest.skip(f"{archive} not found: download {DOWNLOADS[name]} as {archive.name} "
                    f"into $CADENCE_DATA ({DATA})")
    target = tmp_path_factory.mktemp(name)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target / name


@pytest.fixture(scope="session")
def aalto_dir(tmp_path_factory) -> Path:
    """The unpacked Aalto dev set (its folder holds keystrokes/)."""
    return _unpack("aalto-136m-dev", tmp_path_factory)


@pytest.fixture(scope="session")
def balabit_dir(tmp_path_factory) -> Path:
    """The unpacked Balabit training set (its folder holds training_files/)."""
    return _unpack("balabit-mouse-train", tmp_path_factory)


def wait_for(predicate, timeout_s: float = 15.0, every_s: float = 0.05):
    """Poll ``predicate`` until it returns something truthy (returned at once) or ``timeout_s``
    passes (then its last value): tests write ``assert wait_for(...)``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


#: the longest run of fast keys in the Aalto typists' streams (one person): a pause of 1,325 ms,
#: then 11 keys at machine speed (gaps of 2-10 ms, holds of 2-3 ms), then typing on at a hand's
#: pace: the keys typed while the recording browser stalled, delivered at once. Its gaps and holds
#: only; the keys are made up.
CATCH_UP_GAPS = [1325.0, 4, 2, 10, 4, 3, 4, 3, 6, 3, 5]
CATCH_UP_HOLDS = [3, 2, 3, 3, 3, 2, 2, 3, 3, 3, 45]


def XServer(size: str = "1280x800x24", first: int = 60):
    """A real Xvfb for a test (agent.evaluation.xreplay.Xvfb), or a skip saying what to install."""
    import shutil
    from agent.evaluation.xreplay import Xvfb
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb not installed: apt-get install xvfb (CI installs it)")
    return Xvfb(size, first)


@contextmanager
def fullscreen_viewer(display_name: str):
    """A remote-desktop client or VM viewer in fullscreen on ``display_name``: a window the size
    of the screen holding the keyboard grab (so that Alt+Tab reaches the remote machine), the
    pointer free. Yields the viewer's (display, window); lets go of every grab at the end."""
    from Xlib import X, display as xdisplay
    d = xdisplay.Display(display_name)
    screen = d.screen()
    viewer = screen.root.create_window(0, 0, screen.width_in_pixels, screen.height_in_pixels,
                                       0, screen.root_depth)
    viewer.map()
    d.sync()
    try:
        assert viewer.grab_keyboard(True, X.GrabModeAsync, X.GrabModeAsync,
                                    X.CurrentTime) == X.GrabSuccess
        d.sync()
        yield d, viewer
    finally:
        d.ungrab_pointer(X.CurrentTime)
        d.ungrab_keyboard(X.CurrentTime)
        viewer.destroy()
        d.sync()
        d.close()


def stop_agent(proc) -> None:
    """Stop an agent started with ``start_new_session`` as its service manager would: SIGTERM,
    then, if it has not exited within 20 s, SIGKILL to its whole process group."""
    import signal
    import subprocess
    from agent.evaluation.xreplay import kill_group
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill_group(proc)


@pytest.fixture(scope="module")
def xserver():
    server = XServer()
    yield server
    server.close()


class GuardTimeout(Exception):
    pass


@pytest.fixture
def alarm_guard(request):
    """Fail (never hang) a test that runs longer than its module's GUARD_S (default 120 s),
    e.g. on a wedged Xvfb or a receiver that never answers."""
    import signal
    seconds = getattr(request.module, "GUARD_S", 120)

    def on_alarm(signum, frame):
        raise GuardTimeout(f"test exceeded {seconds}s guard")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def load_script(name: str):
    """A script of scripts/ (not a package) imported as a module, for its functions."""
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
