"""The agent's state machine: events in, effects out (functional core; no I/O, no clock).

``Pipeline.feed(event)`` consumes one Event and returns the effects the shell must carry out
(``agent.runtime`` does: lock, notify, audit, train, save). Time comes from the events, so the
same pipeline runs live and over recordings, deterministically.

States: ``learning`` (n%) -> ``protecting`` -> ``alert`` / ``locked``; ``paused``;
``degraded`` is set by the shell (no input, no keyring, ...); ``error`` is the shell's own
(its worker failing, :mod:`agent.runtime`), never a pipeline state.

Learning: keystrokes are cut into enrolment windows of ``ENROL_WINDOW`` keys (about one typed
sentence; windows broken by a pause of more than ``WINDOW_BREAK_S`` are dropped if short).
The profile is trained when ``policy.enrol_keystrokes`` keys were typed *and* the enrolment
passes the quality check (:func:`enrolment_quality`); until then learning goes on.

Protecting: as :class:`agent.decision.ScoringWindow` says (every 10 keystrokes, over the last
up to 200 since the stream restarted) the window is scored against the profile and the trust
level updated (:mod:`agent.decision`). The stream restarts after a pause of ``WINDOW_BREAK_S``,
an unlock or a pause, so a new person at the keyboard is judged on their own typing. Windows
that scored clearly genuine adapt the profile (at most once per window's worth of new keys);
nothing else ever does. Injected input the policy
allows (remote desktop, password managers) is neither scored nor learned; a keystroke
injection detection locks at once and discards the keys that follow it (with an observe-only
policy: until a break of ``WINDOW_BREAK_S``) and the enrolment the payload may have begun in.
While the session is locked, protection is paused or degraded, or a verdict holds, only the
injection rule watches (:meth:`Pipeline._watch`): it acts on an injector then as at any time
(at the lock screen it can only alert).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from agent import decision
from agent.events import ARRIVALS, Event, Kind
from agent.features.injection import InjectionDetector
from agent.features.keystroke import N_CELLS, N_BINS, window_vector
from agent.features.mouse import Segmenter, action_features
from agent.model.mouse import MouseModel
from agent.model.profile import KeystrokeModel, Profile
from agent.policy import Policy

ENROL_WINDOW = 50
WINDOW_BREAK_S = 60.0
MIN_ENROL_WINDOWS = 10
MAX_ENROL_WINDOWS = 400    # 20,000 keys, the policy's largest enrolment; older windows go
RETRAIN_AFTER_KEYS = 500   # after a training that failed, learning goes on this long first
MIN_COVERED_CELLS = 8
SAVE_EVERY_ADAPTATIONS = 20
MOUSE_WINDOW = 20          # actions per mouse decision (the window the model is trained for)
MOUSE_STEP = 10            # score the mouse every this many new actions
MIN_MOUSE_ACTIONS = 300    # mouse use while learning needed to train a mouse model
MAX_MOUSE_ACTIONS = 4000   # enrolment actions kept (bounded memory)
# Mouse evidence moves trust at most this much per window: at 20 actions its AUC (0.83 on
# Balabit) is far below typing's over 200 keys, so it takes several odd windows to lock.
MOUSE_MAX_DROP = 20.0
MOUSE_MAX_RISE = 10.0
WATCHING = ("locked", "paused", "degraded")  # only the injection rule sees keys (Pipeline._watch)
ADAPT_MASS = 4  # adapted profile holds at most ~2x the enrolment's timings
# A payload's keys the injection rule may take before it fires: its longest window (32 key-downs,
# chords) after what the catch-up can excuse in a row (24). Enrolment cut within this many
# key-downs of a detection may hold them, and is dropped.
INJECTION_REACH = 64


#: Why the agent is degraded, alerting or stopped: short codes (audit, SIEM) and what they mean.
REASONS = {
    "wayland": "Wayland session: input to native Wayland apps cannot be seen; log in to an "
               "X11 session to be protected",
    "no-display": "no display: no keyboard or mouse input can be seen",
    "hook-failed": "input hooks could not start (no permission or no input backend); "
                   "see cadence doctor",
    "hook-stopped": "an input hook stopped; restarting it",
    "hook-silent": "an input hook is silent while the system reports input; restarting it",
    "keyring-locked": "the OS keyring is locked or unreachable: the profile cannot be read yet",
    "store-unreadable": "the stored profile or its key cannot be read (see the log): fix its "
                        "owner and permissions; Cadence waits for it rather than learn over it",
    "impostor": "the typing does not match this session's user",
    "injection": "keystroke injection detected (typing no person makes)",
    "lock-failed": "Cadence could not lock the session; configure a screen locker "
                   "(see cadence doctor)",
    "worker-exception": "the agent fails on its input again and again (see its log); it keeps "
                        "trying",
}


# -- effects ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Audit:
    kind: str
    fields: dict


@dataclass(frozen=True)
class Notify:
    title: str
    body: str


@dataclass(frozen=True)
class Lock:
    reason: str


@dataclass(frozen=True)
class Train:
    windows: np.ndarray = field(repr=False)
    mouse_actions: np.ndarray = field(repr=False, default_factory=lambda: np.empty((0, 0)))


@dataclass(frozen=True)
class Save:
    profile: Profile = field(repr=False)


def enrolment_quality(windows: np.ndarray) -> str | None:
    """None when enrolment windows are good enough to train on, else the reason they are not."""
    if len(windows) < MIN_ENROL_WINDOWS:
        return f"fewer than {MIN_ENROL_WINDOWS} typing windows"
    support = windows.sum(axis=0).reshape(N_CELLS, N_BINS).sum(axis=1)
    if int((support >= 20).sum()) < MIN_COVERED_CELLS:
        return "too little varied typing (most key classes unseen)"
    per_window = windows.sum(axis=1)
    if np.median(per_window) < ENROL_WINDOW:
        return "typing too broken up to time"
    return None


class Pipeline:
    def __init__(self, policy: Policy, profile: Profile | None, cell_weights: np.ndarray,
                 injection: InjectionDetector | None = None) -> None:
        self.policy = policy
        self.weights = cell_weights
        self.injection = injection or InjectionDetector.with_overrides(
            policy.injection_sensitivity,
            allow_software_injected=policy.injection_allow_software,
            **({} if policy.injection_new_keyboard else {"new_keyboard_keys": 0}))
        self.profile = profile
        self.state = "learning" if profile is None else "protecting"
        self.reason: str | None = None
        self.window = decision.ScoringWindow()
        self.trust_policy = decision.TrustPolicy(sensitivity=policy.sensitivity)
        self.thresholds = self._thresholds(profile)
        self.trust = decision.reset()
        self.segmenter = Segmenter()
        self.mouse_actions: list[np.ndarray] = []
        self._actions: deque[np.ndarray] = deque(maxlen=MOUSE_WINDOW)
        self._new_actions = 0
        self.last_mouse_score: float | None = None
        self.last_score: float | None = None
        self.last_verdict = "ok"
        self.enrol_windows: list[np.ndarray] = []
        self.enrol_keys = 0
        self.quality: str | None = None
        self.training = False
        self._discard_training = False  # an injection came while it trained
        self._train_after = 0          # enrol_keys a retry waits for, after a failed training
        self.adaptations = 0
        self._events: deque[Event] = deque()
        self._keys_in_buffer = 0
        self._typed = 0
        self._last_scored: int | None = None
        self._last_adapted = 0
        self._last_key_ns: int | None = None
        self._before_pause = self.state   # what a pause or a degraded spell goes back to
        self._reason_before: str | None = None
        self._reported = False           # an injection reported in this lock or hold
        self._injections_unreported = 0  # detections after the one this lock or hold reported

    # -- status -------------------------------------------------------------------------------
    @property
    def progress(self) -> int:
        if self.profile is not None:
            return 100
        return min(99, int(100 * self.enrol_keys / self.policy.enrol_keystrokes))

    def status(self) -> dict:
        out = {"state": self.state, "progress": self.progress, "reason": self.reason,
               "detail": REASONS.get(self.reason) if self.reason else None,
               "verdict": self.last_verdict, "enrol_keystrokes": self.enrol_keys,
               "enrol_needed": self.policy.enrol_keystrokes, "quality": self.quality}
        if self.profile is not None:
            out["trust"] = round(self.trust.trust, 2)
        if self.last_score is not None:
            out["last_score"] = round(self.last_score, 4)
        out["mouse_model"] = bool(self.profile is not None and self.profile.mouse is not None)
        out["mouse_actions_learned"] = len(self.mouse_actions)
        if self.last_mouse_score is not None:
            out["last_mouse_score"] = round(self.last_mouse_score, 4)
        return out

    # -- input ----------------------------------------------------------------------------------
    def feed(self, event: Event) -> list:
        if event.injected and self.policy.injection_allow_software:
            return []  # OS-flagged automation the policy allows: not the user's input
        if event.kind in ARRIVALS:
            self.injection.observe(event)  # a NEW_KEYBOARD opens the new-keyboard window
            if event.kind != Kind.ATTACH:
                return []
            locked = self.session_is_locked
            return [Audit("keyboard_attached", {"while_locked": True} if locked else {})]
        if self.state in WATCHING or self.holding():
            return self._watch(event)
        if not event.is_key:
            return self._mouse(event)
        detection = self.injection.observe(event)
        if detection is not None:
            return self._injection(detection)
        if event.kind == Kind.DOWN and not event.repeat:
            if self._last_key_ns is not None and \
                    event.t_ns - self._last_key_ns > WINDOW_BREAK_S * 1e9:
                self._clear_buffer()
            self._last_key_ns = event.t_ns
            self._keys_in_buffer += 1
            self._typed += 1
        self._events.append(event)
        if self.profile is None:
            return self._learn()
        return self._protect()

    def _watch(self, event: Event) -> list:
        """Locked, paused, degraded, or held after a verdict: nothing is learned or scored, but
        the injection rule still watches. An injector typing at the lock screen (guessing the
        password) or typing on after its verdict is reported once per lock or hold, the
        detections after that counted into the unlock's audit entry. One typing while the
        user paused protection, or while the agent is degraded with its hooks still hearing
        keys (a keyring locked), gets the injection's own action: a pause is no way round it.
        An observe-only injection verdict holds until a break in the typing of
        ``WINDOW_BREAK_S``, and each detection is audited."""
        if not event.is_key:
            return []
        if event.kind == Kind.DOWN and not event.repeat:
            quiet = self._last_key_ns is not None and \
                event.t_ns - self._last_key_ns > WINDOW_BREAK_S * 1e9
            self._last_key_ns = event.t_ns
            if quiet and self._observing_injection():
                self.last_verdict = "ok"      # a break: whoever types now is judged afresh
                return self.feed(event)
        detection = self.injection.observe(event)
        if detection is None:
            return []
        if self._reported:
            self._injections_unreported += 1
            return []
        if not self.session_is_locked:     # the injection's own action
            return self._injection(detection)
        self._reported = True
        self.last_verdict = "injection"
        return [Audit("injection", {**injection_fields(detection), "action": "alert",
                                    "while_locked": True}),
                Notify("Cadence: " + INJECTION_MESSAGE + " while the session was locked",
                       "Reason: injection")]

    @property
    def session_is_locked(self) -> bool:
        """Locked, or degraded with the session locked meanwhile (what it goes back to)."""
        return self.state == "locked" or (self.state == "degraded" and
                                          self._before_pause == "locked")

    def holding(self) -> bool:
        """An impostor or injection verdict that acted holds until the session is unlocked;
        an observed injection until a break in the typing (:meth:`_watch`)."""
        action = {"impostor": self.policy.action,
                  "injection": self.policy.injection_action}.get(self.last_verdict)
        return action is not None and (action != "observe" or self.last_verdict == "injection")

    def _observing_injection(self) -> bool:
        return self.last_verdict == "injection" and self.policy.injection_action == "observe"

    def _clear_buffer(self) -> None:
        """Restart the stream: the next window holds only what is typed from now on."""
        self._events.clear()
        self._keys_in_buffer = 0
        self._typed = 0
        self._last_scored = None
        self._last_adapted = 0

    def _thresholds(self, profile: Profile | None):
        if profile is None:
            return None
        return decision.thresholds_from_calibration(profile.keystroke.calibration,
                                                    self.trust_policy,
                                                    legacy=profile.keystroke.legacy,
                                                    drift=profile.keystroke.drift)

    def _trim(self, keys: int) -> None:
        """Keep the events of the last ``keys`` keystrokes (plus their pending releases)."""
        while self._keys_in_buffer > keys:
            e = self._events.popleft()
            if e.kind == Kind.DOWN and not e.repeat:
                self._keys_in_buffer -= 1

    # -- learning -------------------------------------------------------------------------------
    def _learn(self) -> list:
        if self._keys_in_buffer < ENROL_WINDOW + 1:
            return []
        window = list(self._events)
        self._clear_buffer()
        self._events.append(window[-1])  # the newest press starts the next window
        self._keys_in_buffer = 1
        vector = window_vector(window[:-1])
        self.enrol_windows.append(vector)
        if len(self.enrol_windows) > MAX_ENROL_WINDOWS:   # a quality check that keeps failing
            del self.enrol_windows[0]
        self.enrol_keys += ENROL_WINDOW
        if self.enrol_keys < max(self.policy.enrol_keystrokes, self._train_after) \
                or self.training:
            return []
        windows = np.array(self.enrol_windows)
        self.quality = enrolment_quality(windows)
        if self.quality is not None:
            return []
        self.training = True
        return [Train(windows, np.array(self.mouse_actions)),
                Audit("enrolment", {"state": "training", "windows": len(windows),
                                    "mouse_actions": len(self.mouse_actions)})]

    def training_failed(self) -> list:
        """The shell could not train on the enrolment: learning goes on, and training is tried
        again ``RETRAIN_AFTER_KEYS`` later."""
        self.training = False
        self._discard_training = False     # nothing came back to drop
        self._train_after = self.enrol_keys + RETRAIN_AFTER_KEYS
        return [Notify("Cadence could not learn your typing profile yet",
                       "It keeps learning and tries again.")]

    def _unlearn_recent(self) -> None:
        """Drop the enrolment windows cut within ``INJECTION_REACH`` key-downs of now: the
        payload just detected may have begun in them."""
        back = self._keys_in_buffer
        while self.enrol_windows and back < INJECTION_REACH:
            self.enrol_windows.pop()
            self.enrol_keys -= ENROL_WINDOW
            back += ENROL_WINDOW

    def installed(self, profile: Profile) -> list:
        """The shell trained (or loaded) a profile: protect with it, once learning was what the
        agent was doing (a lock, a pause, a degraded spell or a verdict's hold comes first).
        A profile trained on windows a payload may have begun in is not: learning goes on
        without them, and trains again."""
        self.training = False
        if self._discard_training:
            self._discard_training = False
            return [Audit("enrolment", {"state": "learning", "reason": "injection"})]
        self.profile = profile
        self.enrol_windows = []
        self.thresholds = self._thresholds(profile)
        self.trust = decision.reset()
        if self.state == "learning":
            self.state = "protecting"
        elif self._before_pause == "learning":
            self._before_pause = "protecting"
        self.mouse_actions = []
        self._clear_buffer()
        self._clear_mouse()
        return [Save(profile), Audit("state", {"state": self.state,
                                               "windows": profile.keystroke.windows}),
                Notify("Cadence is protecting this session",
                       "Your typing profile is ready; Cadence now watches for someone else.")]

    # -- protecting -----------------------------------------------------------------------------
    def _protect(self) -> list:
        self._trim(self.window.size)
        if not decision.is_due(self._typed, self._last_scored, self.window):
            return []
        self._last_scored = self._typed
        vector = window_vector(self._events)
        model = self.profile.keystroke
        score = float(model.score(vector[None, :], self.weights)[0])
        self.last_score = score
        self.trust = decision.update(self.trust, score, self.thresholds, self.trust_policy)
        effects = []
        if self._typed - self._last_adapted >= self.window.size and \
                decision.may_adapt(self.trust, score, self.thresholds, self.trust_policy):
            self._last_adapted = self._typed
            self._adapt(model, vector)
            if self.adaptations % SAVE_EVERY_ADAPTATIONS == 0:
                effects.append(Save(self.profile))
        effects += self._verdict(self.trust.verdict.value, score, "keystroke")
        return effects

    # -- mouse ----------------------------------------------------------------------------------
    def _mouse(self, event: Event) -> list:
        """Pointer events become actions (the same segmenter as the evaluation); while
        learning their features are kept for the mouse model, then windows of them are scored."""
        effects = []
        for action in self.segmenter.push(event):
            row = action_features(action)
            if self.profile is None:
                if len(self.mouse_actions) < MAX_MOUSE_ACTIONS:
                    self.mouse_actions.append(row)
            elif self.profile.mouse is not None:
                effects += self._mouse_action(row, self.profile.mouse)
        return effects

    def _mouse_action(self, row: np.ndarray, model: MouseModel) -> list:
        self._actions.append(row)
        self._new_actions += 1
        if len(self._actions) < model.window or self._new_actions < MOUSE_STEP:
            return []
        self._new_actions = 0
        score = float(model.score_vectors(model.summary(np.array(self._actions)))[0])
        score /= model.scale  # 1.0: the user's own typical window
        self.last_mouse_score = score
        self.trust = decision.update(self.trust, score, decision.Thresholds(1.0, 0.0),
                                     mouse_trust_policy(model, self.policy.sensitivity))
        return self._verdict(self.trust.verdict.value, score, "mouse")

    def _clear_mouse(self) -> None:
        self.segmenter = Segmenter()
        self._actions.clear()
        self._new_actions = 0

    def _adapt(self, model: KeystrokeModel, vector: np.ndarray) -> None:
        """Follow slow drift: blend a clearly genuine window in, keeping total mass bounded."""
        counts = model.counts + vector
        cap = ADAPT_MASS * model.windows * ENROL_WINDOW  # timings: about 2 per keystroke
        if counts.sum() > cap > 0:
            counts *= cap / counts.sum()  # older typing fades as new genuine typing comes in
        model.counts = counts
        model._table = None
        self.adaptations += 1

    def _verdict(self, verdict: str, score: float, modality: str) -> list:
        previous, self.last_verdict = self.last_verdict, verdict
        fields = {"verdict": verdict, "score": round(score, 4),
                  "trust": round(self.trust.trust, 2), "modality": modality}
        if verdict == "impostor":
            if previous == "impostor":
                return []
            return self._act(self.policy.action, "impostor", fields,
                             "Someone else may be typing on this session")
        if verdict == "suspect" and previous != "suspect":
            self.state = "alert" if self.policy.action != "observe" else self.state
            return [Audit("alert", fields)] + (
                [] if self.policy.action == "observe" else
                [Notify("Cadence: unusual typing", "The typing on this session does not look "
                        "like its user's.")])
        if verdict == "ok" and self.state == "alert":
            self.state = "protecting"
            return [Audit("state", {"state": "protecting", **fields})]
        return []

    def _act(self, action: str, reason: str, fields: dict, message: str) -> list:
        effects = [Audit(reason, {**fields, "action": action})]
        if action == "observe":
            self.trust = decision.reset()  # logged; keep observing with fresh trust
            return effects
        self.state = "alert"
        self.reason = reason
        if action == "lock":               # before the notification, which may take seconds
            effects.append(Lock(reason))
        effects.append(Notify("Cadence: " + message, "Reason: " + reason))
        return effects

    def _injection(self, detection) -> list:
        if self.state == "learning":
            self._unlearn_recent()
            if self.training:           # the windows sent to train may hold the payload's
                self._discard_training = True
        self._clear_buffer()
        action = self.policy.injection_action
        if action == "observe" and self.holding():  # an acted verdict's hold stays as it is
            return [Audit("injection", {**injection_fields(detection), "action": action})]
        self._reported = action != "observe"
        self.trust = decision.with_verdict(self.trust, decision.Verdict.INJECTION)
        self.last_verdict = "injection"
        degraded = self.reason if self.state == "degraded" else None    # a pause just ends
        effects = self._act(action, "injection", injection_fields(detection), INJECTION_MESSAGE)
        if degraded and self.state == "alert":  # degraded stays, going back to the verdict
            self._before_pause, self._reason_before = self.state, self.reason
            self.state, self.reason = "degraded", degraded
        return effects

    # -- from the shell ---------------------------------------------------------------------------
    def session_locked(self, locked: bool) -> list:
        """The OS reports the session locked (ours or the user's) or unlocked again. While
        degraded the agent stays degraded; what it goes back to follows the lock."""
        if self.state == "degraded":
            if locked and self._before_pause != "locked":
                self._before_pause, self._reason_before = "locked", None
                self.injection.reset()
            elif not locked and self._before_pause == "locked":
                self._before_pause = "protecting" if self.profile else "learning"
                unreported = self._unlocked()
                if unreported:              # what the lock screen saw is still told
                    return [Audit("state", {"state": "degraded", "reason": self.reason,
                                            **unreported})]
            return []
        if locked and self.state != "locked":
            self.state = "locked"
            self._clear_buffer()
            self._clear_mouse()
            self.injection.reset()
            return [Audit("state", {"state": "locked"})]
        if not locked and self.state == "locked":
            self.state = "protecting" if self.profile else "learning"
            self.reason = None
            return [Audit("state", {"state": self.state, **self._unlocked()})]
        return []

    def _unlocked(self) -> dict:
        """The user is back: the verdicts and evidence from before are done with (the lock
        screen's keys are no evidence for what follows). Audit fields: what went unreported."""
        self.last_verdict = "ok"
        self._reported = False
        self.trust = decision.reset()
        self.injection.reset()
        unreported, self._injections_unreported = self._injections_unreported, 0
        return {"injections_unreported": unreported} if unreported else {}

    def lock_failed(self, method: str) -> list:
        if self.session_is_locked:      # locked meanwhile: nothing more to do
            return [Audit("lock_failed", {"method": method})]
        if self.state == "degraded":       # it stays so; the alert is what it goes back to
            self._before_pause, self._reason_before = "alert", "lock-failed"
        else:
            self.state, self.reason = "alert", "lock-failed"
        return [Audit("lock_failed", {"method": method}),
                Notify("Cadence could not lock this session",
                       "Configure a screen locker (see cadence doctor).")]

    def pause(self) -> list:
        """The user pauses protection from the tray, if the policy allows it (the same line
        resumes it): not out of a state the agent did not choose (locked, degraded, an alert)
        nor while a verdict holds (an impostor could pause and resume it away). The trust
        level stays as it was: a resume is no fresh start."""
        if not self.policy.allow_pause or self.holding() or \
                self.state in ("paused", "locked", "degraded", "alert"):
            return []
        self._before_pause, self._reason_before = ("protecting" if self.profile
                                                   else "learning"), None
        self.state = "paused"
        self._clear_buffer()
        self._clear_mouse()
        return [Audit("state", {"state": "paused"})]

    def resume(self) -> list:
        if self.state != "paused":
            return []
        self.state, self.reason = self._before_pause, None
        return [Audit("state", {"state": self.state})]

    def degrade(self, reason: str | None) -> list:
        """Set (a code of REASONS) or clear (None) the degraded state the shell observed."""
        if reason is not None and (self.state != "degraded" or self.reason != reason):
            if self.state != "degraded":
                self._before_pause, self._reason_before = self._resumable()
            self.state, self.reason = "degraded", reason
            self._clear_buffer()
            self._clear_mouse()
            return [Audit("state", {"state": "degraded", "reason": reason})]
        if reason is None and self.state == "degraded":
            self.state, self.reason = self._before_pause, self._reason_before
            return [Audit("state", {"state": self.state})]
        return []

    def _resumable(self) -> tuple[str, str | None]:
        """The state (and reason) a degraded spell goes back to: locked and alert are kept (the
        unlock, or the verdict's hold, is still to come); else the work."""
        if self.state in ("locked", "alert"):
            return self.state, self.reason
        return ("protecting" if self.profile else "learning"), None


INJECTION_MESSAGE = "keystroke injection detected"


def injection_fields(detection) -> dict:
    """An injection verdict's audit fields: the rule and its evidence, numbers only."""
    return {"verdict": "injection", "rule": detection.rule,
            "keys_observed": detection.keys_observed,
            "recent_gaps_ms": list(detection.recent_gaps_ms),
            "recent_holds_ms": list(detection.recent_holds_ms)}


def mouse_trust_policy(model: MouseModel, sensitivity: float) -> decision.TrustPolicy:
    """How mouse windows move trust, from this user's enrolment: a window scoring beyond the
    user's own 95th percentile (``threshold``, in units of their typical score) costs trust,
    one below it gives some back; steps are smaller than typing's (see MOUSE_MAX_DROP)."""
    tolerance = max(model.threshold / model.scale - 1.0, 0.1)
    return decision.TrustPolicy(tolerance=tolerance, gain=40.0, max_drop=MOUSE_MAX_DROP,
                                max_rise=MOUSE_MAX_RISE, sensitivity=sensitivity)
