"""The imperative shell of the live agent: threads, hooks, OS actions, files.

Threads: the input source's threads (pynput's listeners; on X11 the agent's own RECORD reader,
:mod:`agent.sources.xrecord`) put Events on a bounded queue; one worker thread feeds them
to the :class:`~agent.pipeline.Pipeline` and carries out the effects it returns; the tray owns
the main thread. The worker wakes once a second while the user is around (every
``IDLE_TICK_S`` once input has stopped, see :func:`tick_interval`) to run the watchdog, pick up
requests from the ``cadence`` command, and publish the status file that ``cadence status``, the
tray and the audit log all read the same state from.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from datetime import datetime, timezone

from agent import __version__
from agent.actions import notify as desktop
from agent.actions import sinks as siem
from agent.actions.audit import AuditLog
from agent.actions.lock import lock_session
from agent.model.prior import cell_weights
from agent.model.profile import KeystrokeModel, Profile
from agent.pipeline import (MIN_MOUSE_ACTIONS, MOUSE_WINDOW, REASONS, Audit, Lock, Notify,
                            Pipeline, Save, Train)
from agent.policy import Settings
from agent.sources.live import HookError, LiveSource
from agent.store import KeyUnavailableError, ProfileStore, StoreError, TamperError
from agent.system import session
from agent.system.files import write_private
from agent.system.instance import InstanceLock
from agent.system.paths import Paths, private_dir

log = logging.getLogger(__name__)

TICK_S = 1.0
IDLE_TICK_S = 5.0         # the worker's tick once input has been away LOCK_CHECK_S
BATCH_S = 0.1             # the worker rests this long after a batch of input
MAX_BATCH = 4096
LOCK_CHECK_S = 5.0        # ask the OS whether the session is locked this long after input stops,
LOCK_CHECK_MAX_S = 60.0   # ... then at doubling intervals up to this while input stays away
UNLOCK_CHECK_S = 2.0      # ... and this often while we know it is locked
SILENT_HOOK_S = 10.0      # hooks silent this long while the OS reports input: hook lost
SILENCE_CHECK_S = 30.0    # how often to compare with the OS's idle time while silent
HOOK_RETRY_S = 30.0       # how often to try hooks again that could not start
KEY_RETRY_S = 10.0
SIGNAL_POLL_S = 10.0      # the no-tray main thread's wait: see Agent.wait_stopped
PRUNE_EVERY_S = 86400.0
REQUESTS = ("enroll-restart", "forget", "pause", "resume")
WORKER_FAILURES_ERROR = 3  # worker steps failing in a row that show the agent in error


def tick_interval(quiet_s: float, locked: bool) -> float:
    """How long the worker sleeps when no input comes. A second while the user is around: the
    tray and the ``cadence`` command are used with the keyboard and mouse, so their requests
    find the worker attentive; ``UNLOCK_CHECK_S`` while the session is locked (the agent
    degraded meanwhile or not); ``IDLE_TICK_S`` once input has stopped, so an idle agent wakes
    less than once a second."""
    if locked:
        return UNLOCK_CHECK_S
    return TICK_S if quiet_s < LOCK_CHECK_S else IDLE_TICK_S


def train_profile(job: Train) -> Profile:
    """A profile from enrolment (training path: imports pyod). The mouse model is trained when
    the user used the mouse enough while learning (``MIN_MOUSE_ACTIONS``)."""
    from agent.model import mouse
    from agent.model.detector import RankShift
    keystroke = KeystrokeModel.from_detector(RankShift().fit(job.windows))
    actions = job.mouse_actions
    enough = len(actions) >= max(MIN_MOUSE_ACTIONS, 2 * MOUSE_WINDOW)
    return Profile(keystroke, mouse.calibrate(actions, MOUSE_WINDOW) if enough else None)


class Agent:
    def __init__(self, paths: Paths, settings: Settings, tray=None,
                 source: LiveSource | None = None) -> None:
        self.paths = paths
        self.settings = settings
        self.policy = settings.policy
        self.tray = tray
        self.source = source or LiveSource()
        self.source.allowed_keyboards = self.policy.injection_allow_keyboards
        self.store = ProfileStore(private_dir(paths.data))
        self.audit = AuditLog(paths.audit, max_bytes=self.policy.audit_max_mb * 1_000_000,
                              backups=self.policy.audit_backups)
        self.instance = InstanceLock(paths.instance_lock)
        self.sinks: siem.SinkDispatcher | None = None  # SIEM delivery, if policy names sinks
        self.stopping = threading.Event()
        self.pipeline: Pipeline | None = None
        self._worker: threading.Thread | None = None
        # a training thread's outcome, with the pipeline it was for (a forget replaces it)
        self._pending_profile: tuple[Pipeline, Profile] | None = None
        self._training_error: tuple[Pipeline, str] | None = None
        self._pause_until = 0.0
        self._last_lock_check = 0.0
        self._last_silence_check = 0.0
        self._unheard_input_at: float | None = None  # when the OS saw input the hooks missed
        self._last_prune = 0.0
        self._last_published: dict | None = None
        self._last_heartbeat = 0.0
        self._hook_events_at = self._hooks_started_at = time.monotonic()
        self._hooks_tried_at = 0.0
        self._hook_problem: str | None = None
        self._allowed_keys_seen = 0
        self._worker_failures = 0       # worker steps that raised, in a row
        self._profile_wait: str | None = None  # why the stored profile is waited for
        self._last_key_retry = 0.0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Take the instance lock, load the profile, start hooks and the worker."""
        self.instance.acquire()
        private_dir(self.paths.requests)
        self.sinks, sink_problems = siem.dispatcher_from_policy(self.policy,
                                                                self.paths.data / "spool")
        if self.sinks is not None:  # alert-worthy audit records also go to the SIEM
            self.sinks.start()
            self.audit = siem.ForwardingAudit(self.audit, self.sinks)
        self.audit.record("start", version=__version__, state="starting")
        self._prune_audit(time.monotonic())
        for problem in self.settings.errors:
            log.error("policy: %s", problem)
            self.audit.record("policy_error", reason="invalid-setting")
        for problem in sink_problems:
            log.error("policy: %s", problem)
            self.audit.record("policy_error", reason="sink-unusable")
        profile = self._load_profile()
        self.pipeline = Pipeline(self.policy, profile, cell_weights())
        if self._profile_wait:
            self._execute(self.pipeline.degrade(self._profile_wait))
        self._hook_problem = self._start_hooks()
        if self._hook_problem:
            self._execute(self.pipeline.degrade(self._hook_problem))
        self._worker = threading.Thread(target=self._work, name="cadence-worker", daemon=True)
        self._worker.start()
        self._publish(force=True)

    def stop(self) -> None:
        self.stopping.set()
        self.source.stop()
        if self._worker is not None:
            self._worker.join(timeout=5)
        if self.pipeline is not None and self.pipeline.profile is not None \
                and not self._profile_wait:
            self._save(self.pipeline.profile)
        self.audit.record("stop", state="stopped")
        if self.sinks is not None:
            self.sinks.stop(timeout=5)
        self._publish(force=True, state="stopped")
        self.instance.release()

    def wait_stopped(self) -> None:
        """Block the main thread until the agent is told to stop (SIGTERM, Ctrl-C). Python runs
        signal handlers on the main thread only, and a signal that lands just before a lock
        wait does not interrupt it, so the wait also ends every ``SIGNAL_POLL_S``."""
        while not self.stopping.wait(SIGNAL_POLL_S):
            pass

    def _load_profile(self) -> Profile | None:
        """The stored profile, or None. One that cannot be read now (its key in a keyring that
        is locked, a file Cadence may not read) is waited for (``_profile_wait``: the agent is
        degraded, and retries every ``KEY_RETRY_S``), never learned over. Each cause is reported
        once, not at every retry: the retries would flood the audit log and the SIEM, and push
        real alerts out of a sink's spool while its collector is down."""
        reported, self._profile_wait = self._profile_wait, None
        try:
            return self.store.load()
        except TamperError as exc:
            log.error("%s", exc)
            self.audit.record("tamper", verdict="tamper", reason=exc.reason)
            self._notify("Cadence: stored profile rejected",
                         "The profile failed its integrity check and was set aside; "
                         "Cadence is learning your typing again.")
            return None
        except StoreError as exc:
            unavailable = isinstance(exc, KeyUnavailableError)
            self._profile_wait = "keyring-locked" if unavailable else "store-unreadable"
            if reported != self._profile_wait:
                log.error("%s", exc)
                self.audit.record("store_error", reason="key-unavailable" if unavailable
                                  else "store-unreadable")
            return None

    def _start_hooks(self) -> str | None:
        kind = session.display_kind()
        if kind in ("wayland", "xwayland"):
            return "wayland"
        if kind == "none":
            return "no-display"
        self._hooks_tried_at = time.monotonic()
        try:
            self.source.start()
        except HookError as exc:
            log.error("input hooks could not start: %s", exc)
            return "hook-failed"
        except Exception as exc:  # noqa: BLE001 - no permission, no display, backend error
            log.error("input hooks could not start: %s", type(exc).__name__)
            return "hook-failed"
        self._hook_events_at = self._hooks_started_at = time.monotonic()
        if self.policy.injection_allow_keyboards and not self.source.keyboard_identity:
            log.warning("injection_allow_keyboards has no effect here: these input hooks cannot "
                        "tell keyboards apart (only X11 with XInput can); every keyboard is judged")
        return None

    # -- the worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        """Wait for input (at most a tick), then take everything queued in one go and rest
        ``BATCH_S``: input costs at most 1/BATCH_S wake-ups a second, however fast it comes;
        decisions use the events' own times, so batching does not change them."""
        last_tick = 0.0
        while not self.stopping.is_set():
            tick = tick_interval(time.monotonic() - self._hook_events_at,
                                 self.pipeline.session_is_locked)
            try:
                batch = [self.source.queue.get(timeout=tick)]
            except queue.Empty:
                batch = []
            while batch and len(batch) < MAX_BATCH:
                try:
                    batch.append(self.source.queue.get_nowait())
                except queue.Empty:
                    break
            now = time.monotonic()
            tick_due = now - last_tick >= tick
            if tick_due:
                last_tick = now
            self._step(batch, now if tick_due else None)
            if batch:
                self.stopping.wait(BATCH_S)

    def _step(self, batch: list, tick_at: float | None) -> None:
        """Feed a batch (and tick, if due). An exception is logged and audited, and the worker
        goes on; ``WORKER_FAILURES_ERROR`` of them in a row show the agent in ``error`` until a
        step succeeds (the tray must not stay green over an agent that fails on its input)."""
        try:
            if batch:
                self._hook_events_at = time.monotonic()
                for event in batch:
                    self._execute(self.pipeline.feed(event))
            if tick_at is not None:
                self._tick(tick_at)
            self._worker_failures = 0
        except Exception:  # noqa: BLE001 - keep protecting; say so
            self._worker_failures += 1
            log.exception("pipeline worker error")
            self.audit.record("error", state="error", reason="worker-exception")
            if self._worker_failures == WORKER_FAILURES_ERROR:
                self._publish(force=True)

    def _tick(self, now: float) -> None:
        self._take_training()
        self._requests()
        p = self.pipeline
        if now - self._last_prune >= PRUNE_EVERY_S:
            self._prune_audit(now)
        if self._profile_wait and now - self._last_key_retry >= KEY_RETRY_S:
            self._retry_profile(now)
        if p.state == "paused" and now >= self._pause_until:
            self._execute(p.resume())
        self._watchdog(now)
        self._check_lock(now)
        if self.sinks is not None:
            self.sinks.maybe_heartbeat(now, {"state": p.state})
        self._publish()

    def _take_training(self) -> None:
        """A training thread's outcome, if it is for the pipeline still running (a forget or a
        restart while it trained replaced that one: its profile is not brought back)."""
        p = self.pipeline
        if self._pending_profile is not None:
            (trained_for, profile), self._pending_profile = self._pending_profile, None
            if trained_for is p:
                self._execute(p.installed(profile))
        if self._training_error is not None:
            (trained_for, _), self._training_error = self._training_error, None
            if trained_for is p:
                self.audit.record("error", reason="training-failed")
                self._execute(p.training_failed())

    def _prune_audit(self, now: float) -> None:
        self._last_prune = now
        try:
            self.audit.prune(self.policy.retention_days)
        except OSError as exc:
            log.error("cannot prune old audit files: %s", exc.strerror)

    def _retry_profile(self, now: float) -> None:
        """The stored profile could not be read: try again; never overwrite it."""
        self._last_key_retry = now
        profile = self._load_profile()
        if self._profile_wait:              # still waiting (for the same, or another cause)
            if not self._hook_problem:
                self._execute(self.pipeline.degrade(self._profile_wait))
            return
        self._execute(self.pipeline.degrade(None))   # loaded, or set aside: learning again
        if profile is not None:
            self._execute(self.pipeline.installed(profile))
        if self._hook_problem:
            self._execute(self.pipeline.degrade(self._hook_problem))

    def _watchdog(self, now: float) -> None:
        if self.stopping.is_set():
            return  # the hooks are being stopped on purpose
        if self._hook_problem in ("wayland", "no-display"):
            return
        problem = None
        if self.source.allowed_keys != self._allowed_keys_seen:   # an allowed keyboard typed:
            self._allowed_keys_seen = self.source.allowed_keys   # the hooks hear, and pass it
            self._hook_events_at = now
        silent = now - self._hook_events_at > SILENT_HOOK_S
        if not self.source.alive():
            if self._hook_problem != "hook-failed":
                problem = "hook-stopped"
            elif now - self._hooks_tried_at >= HOOK_RETRY_S:
                problem = "hook-failed"  # try again now and then; the reason stays the same
        elif not silent:
            self._unheard_input_at = None
        elif self._unheard_input_at is not None:
            if now - self._unheard_input_at >= TICK_S:  # and the hooks still have not heard it
                problem = "hook-silent"
        elif now - self._last_silence_check >= SILENCE_CHECK_S:
            self._last_silence_check = now  # ask the OS only now and then, when silent
            idle = session.idle_seconds()
            if idle is not None and idle < TICK_S:
                # Input the OS saw just now may still be on its way through the hooks: only
                # note when it came, and call the hooks silent if it has not arrived a tick later.
                self._unheard_input_at = now - idle
        if problem:
            log.warning("%s", REASONS[problem])
            self._hook_problem = problem
            self._unheard_input_at = None
            self._execute(self.pipeline.degrade(problem))
            restart = self._start_hooks()
            if restart:
                self._hook_problem = restart
                self._execute(self.pipeline.degrade(restart))
        elif self._hook_problem and self._hook_events_at > self._hooks_started_at:
            self._hook_problem = None  # the restarted hooks deliver input again
            self._execute(self.pipeline.degrade(self._profile_wait))

    def _check_lock(self, now: float) -> None:
        """Learn whether the session is locked. Not while the user types (the X check briefly
        grabs the keyboard, and the pointer if the keyboard is held): ``LOCK_CHECK_S`` after
        input stops, then at doubling intervals (an idle agent stays quiet); every
        ``UNLOCK_CHECK_S`` while it knows it is locked (degraded meanwhile or not)."""
        if self.pipeline.session_is_locked:
            due = now - self._last_lock_check >= UNLOCK_CHECK_S
        else:
            quiet = now - self._hook_events_at
            last = self._last_lock_check - self._hook_events_at  # quiet time at the last check
            due = quiet >= LOCK_CHECK_S and (last < LOCK_CHECK_S or
                                             quiet >= min(2 * last, last + LOCK_CHECK_MAX_S))
        if not due:
            return
        self._last_lock_check = now
        locked = session.screen_locked()
        if locked is not None:
            self._session_locked(locked)

    def _session_locked(self, locked: bool) -> None:
        effects = self.pipeline.session_locked(locked)
        if effects:                         # locked or unlocked now: held keys are stale
            self.source.forget_held_keys()
        self._execute(effects)

    def _requests(self) -> None:
        for name in REQUESTS:
            path = self.paths.requests / name
            if path.exists():
                path.unlink(missing_ok=True)
                self.handle(name)

    def handle(self, name: str) -> None:
        """A request from the tray or the ``cadence`` command (worker thread)."""
        p = self.pipeline
        if name == "pause":
            if self.policy.allow_pause:
                self._pause_until = time.monotonic() + 60 * self.policy.pause_minutes
                paused = p.pause()
                if paused:
                    self.source.forget_held_keys()
                self._execute(paused)
        elif name == "resume":
            self._execute(p.resume())
        elif name in ("enroll-restart", "forget") and p.holding():
            log.error("%s refused: a verdict holds this session until it is unlocked", name)
            self.audit.record("request_refused", reason=name)
            self._notify("Cadence: request refused",
                         "The profile cannot be deleted or restarted while Cadence holds this "
                         "session after a verdict; unlock the session first.")
        elif name in ("enroll-restart", "forget"):
            try:
                removed = self.store.forget()
            except StoreError as exc:
                log.error("%s", exc)
                self.audit.record("store_error", reason="forget-failed")
                return
            self.audit.record("enrolment", state="learning",
                              reason="forgotten" if name == "forget" else "restart",
                              files_removed=int(removed.get("files_removed", 0)))
            self._profile_wait = None       # no stored profile left to wait for
            self.pipeline = Pipeline(self.policy, None, cell_weights())
            if self._hook_problem:
                self._execute(self.pipeline.degrade(self._hook_problem))
        self._publish(force=True)

    # -- effects ---------------------------------------------------------------------------------
    def _execute(self, effects: list) -> None:
        """Carry out the pipeline's effects, each on its own: one that fails (an audit record
        refused, a notification service gone) is logged, and the rest (the lock) still run."""
        for effect in effects:
            try:
                self._carry_out(effect)
            except Exception:  # noqa: BLE001 - the next effect may be the lock
                log.exception("could not carry out a %s effect", type(effect).__name__)
        if effects:
            self._publish()

    def _carry_out(self, effect) -> None:
        if isinstance(effect, Audit):
            self.audit.record(effect.kind, **effect.fields)
        elif isinstance(effect, Notify):
            self._notify(effect.title, effect.body)
        elif isinstance(effect, Lock):
            self._lock(effect.reason)
        elif isinstance(effect, Train):
            threading.Thread(target=self._train, args=(effect, self.pipeline), daemon=True,
                             name="cadence-train").start()
        elif isinstance(effect, Save):
            self._save(effect.profile)

    def _lock(self, reason: str) -> None:
        command = list(self.policy.locker_command) or None
        result = lock_session(command)
        method = siem.safe_code(result.method)      # a locker's name, fit for the audit rules
        self.audit.record("lock", reason=reason, method=method, locked=result.locked,
                          verified=bool(result.verified))
        if result.locked:
            self._session_locked(True)
        else:
            log.error("could not lock the session: %s", result.detail)
            self._execute(self.pipeline.lock_failed(method))

    def _train(self, job: Train, pipeline: Pipeline) -> None:
        try:
            self._pending_profile = (pipeline, train_profile(job))
        except Exception as exc:  # noqa: BLE001
            log.exception("training failed")
            self._training_error = (pipeline, type(exc).__name__)

    def _save(self, profile: Profile) -> None:
        try:
            self.store.save(profile)
        except Exception as exc:  # noqa: BLE001 - keep protecting from memory
            log.error("could not save the profile: %s", exc)
            self.audit.record("store_error", reason="save-failed")

    def _notify(self, title: str, body: str) -> None:
        if not desktop.notify(title, body) and self.tray is not None:
            self.tray.notify(title, body)

    # -- status ------------------------------------------------------------------------------------
    def status(self) -> dict:
        out = dict(self.pipeline.status()) if self.pipeline else {"state": "starting"}
        if self._worker_failures >= WORKER_FAILURES_ERROR:
            out.update(state="error", reason="worker-exception",
                       detail=REASONS["worker-exception"])
        try:
            protection, note = self.store.key_protection, self.store.key_protection_note
        except StoreError as exc:
            protection, note = "unknown", str(exc)
        out.update({
            "pid": os.getpid(), "version": __version__, "host": socket.gethostname(),
            "key_protection": protection,
            "key_note": note,
            "audit_write_failures": self.audit.write_failures,
            "managed": sorted(self.settings.managed),
            "policy_errors": list(self.settings.errors),
            "action": self.policy.action,
            "dropped_events": self.source.dropped,
            "watching_keyboards": self.source.watching_keyboards,
            "keyboard_identity": self.source.keyboard_identity,
            "allowed_keyboard_keys": self.source.allowed_keys,
        })
        return out

    def _publish(self, force: bool = False, state: str | None = None) -> None:
        status = self.status()
        if state:
            status["state"] = state
        now = time.monotonic()
        same = {k: v for k, v in status.items() if k != "updated"} == self._last_published
        if same and not force and now - self._last_heartbeat < 30:
            return
        self._last_published = {k: v for k, v in status.items() if k != "updated"}
        self._last_heartbeat = now
        status["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            private_dir(self.paths.runtime)
            write_private(self.paths.state, json.dumps(status).encode(), durable=False)
        except OSError as exc:
            log.error("cannot write %s: %s", self.paths.state, exc.strerror)
        if self.tray is not None:
            self.tray.show(status)
