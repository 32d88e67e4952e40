"""Mouse actions: from an Event stream to one feature vector per action (pure numpy, no I/O).

Coordinates are used here, and only here, to compute movement; they leave this module only as
relative, per-action quantities (lengths, speeds, angles), never as positions.

Segmentation (:class:`Segmenter`, one event at a time, the same code for live input and
replays; :func:`segment` runs it over a stream):

- a *movement* is a run of pointer moves with no button held;
- it ends at a pause: the next move comes more than ``PAUSE_S`` after the previous one (RDP
  clients send points every 15-16 ms, and every ~110-125 ms while the pointer is slow, so the
  pause must be well above that; 0.5 s measured best on held-out users, see
  :mod:`agent.evaluation.mouse`), at a scroll, or at a coordinate jump;
- a movement ended by a pause or scroll is a *mouse-move* action (``MM``);
- a movement ended by a button press, when the press comes within ``PAUSE_S`` of its last move,
  becomes a *point-and-click* action (``PC``) when the button is released, unless the pointer
  travelled ``DRAG_MIN_PX`` or more while the button was held: then the action is a
  *drag-and-drop* (``DD``) from the press to the release, and the movement before the press is
  a mouse-move of its own;
- a press after a pause (a second click of a double click, say) has no movement to describe:
  it is not an action (``dropped["click_without_movement"]``).

Cleaning, every case counted in the returned ``dropped`` counter:
- ``same_time``: a move with the previous point's timestamp replaces that point (Balabit's
  client clock ticks every 15-16 ms, so many points share a timestamp; the last position wins);
- ``zero_length``: a move to the previous point's position is dropped (no motion; a pointer at
  rest then moving again is a pause, not a slow move);
- ``jump``: a step longer than ``JUMP_PX`` (across monitors, a remote-desktop reconnect,
  Balabit's 65535 sentinels) ends the action in progress; the far point starts a new one;
- ``too_short``: an action with fewer than ``MIN_POINTS`` points is not described;
- ``release_without_press``, ``press_while_pressed``: unpaired button events are ignored.

Features (``FEATURE_NAMES``, one vector per action): the action's kind; duration, path length,
end-to-end distance, straightness (distance / path), number of points; speed (mean, max,
spread, median, when the peak comes as a share of the duration); acceleration, deceleration and
jerk magnitudes; turning per step and curvature (radians per px: 1/R on an arc of radius R);
the largest deviation from the chord as a share of the chord; the pause between the last move
and the press (PC) and the button's hold (PC, DD); and the sampling cadence (median and mean time
step, shares of steps under 50 ms and over 115 ms, median step length), which tells the input
path (mouse, polling rate, remote-desktop client) as much as the hand. Heavy-tailed quantities
are log1p. The action's direction is not a feature: it says where the work was on the screen,
not who did it, and it made held-out users worse.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from agent.events import Event, Kind

PAUSE_S = 0.5
JUMP_PX = 5000.0
DRAG_MIN_PX = 5.0
MIN_POINTS = 4
MAX_HOLD_S = 5.0
SHORT_DT_S = 0.05
LONG_DT_S = 0.115

MM, PC, DD = 0, 1, 2
KIND_NAMES = ("mouse_move", "point_click", "drag_drop")

FEATURE_NAMES = (
    "is_point_click", "is_drag_drop",
    "log_duration_s", "log_path_px", "log_distance_px", "straightness", "log_points",
    "log_speed_mean", "log_speed_max", "log_speed_sd", "speed_peak_at",
    "log_accel_pos_max", "log_decel_max", "log_accel_abs_mean", "log_jerk_abs_mean",
    "turn_abs_per_step", "log_curvature_mean", "deviation_ratio",
    "log_end_slow_s", "log_hold_s",
    "log_dt_median_s", "short_dt_share", "log_step_median_px", "log_speed_median",
    "log_dt_mean_s", "long_dt_share",
)
N_FEATURES = len(FEATURE_NAMES)


@dataclass(frozen=True)
class Action:
    """One action: ``t`` seconds (strictly increasing), ``xy`` pixels shaped (n, 2); ``hold_s``
    is the button's hold for PC/DD (NaN for MM); ``end_slow_s`` the time from the last move to
    the press for PC (0 otherwise)."""

    kind: int
    t: np.ndarray
    xy: np.ndarray
    hold_s: float = float("nan")
    end_slow_s: float = 0.0


@dataclass
class Segmenter:
    """Streaming segmentation: :meth:`push` events, collect the actions it completes."""

    pause_s: float = PAUSE_S
    jump_px: float = JUMP_PX
    drag_min_px: float = DRAG_MIN_PX
    min_points: int = MIN_POINTS
    dropped: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._points: list[tuple[float, float, float]] = []
        self._press: tuple[float, float, float] | None = None
        self._before: list[tuple[float, float, float]] = []
        self._drag: list[tuple[float, float, float]] = []

    def push(self, event: Event) -> list[Action]:
        kind = event.kind
        t = event.t_ns / 1e9
        if kind == Kind.MOVE:
            return self._move(t, float(event.x), float(event.y))
        if kind == Kind.PRESS:
            return self._on_press(t, float(event.x), float(event.y))
        if kind == Kind.RELEASE:
            return self._on_release(t, float(event.x), float(event.y))
        if kind == Kind.SCROLL:
            return self._close() if self._press is None else []
        return []

    def flush(self) -> list[Action]:
        """End of stream: the movement in progress becomes an action; a held button is lost."""
        if self._press is not None:
            self.dropped["unreleased_press"] += 1
            self._press, self._before, self._drag = None, [], []
        return self._close()

    # -- internals -------------------------------------------------------------------------
    def _add(self, points: list, t: float, x: float, y: float) -> bool:
        """Append a cleaned point; False when the step is a jump (the caller breaks)."""
        if points:
            t0, x0, y0 = points[-1]
            if abs(x - x0) > self.jump_px or abs(y - y0) > self.jump_px:
                self.dropped["jump"] += 1
                return False
            if x == x0 and y == y0:
                self.dropped["zero_length"] += 1
                return True
            if t <= t0:
                self.dropped["same_time"] += 1
                points[-1] = (t0, x, y)
                return True
        points.append((t, x, y))
        return True

    def _move(self, t: float, x: float, y: float) -> list[Action]:
        if self._press is not None:
            if not self._add(self._drag, t, x, y):
                self.dropped["drag_with_jump"] += 1
                self._press, self._before, self._drag = None, [], []
            return []
        out = []
        if self._points and t - self._points[-1][0] > self.pause_s:
            out = self._close()
        if not self._add(self._points, t, x, y):
            out += self._close()
            self._points = [(t, x, y)]
        return out

    def _on_press(self, t: float, x: float, y: float) -> list[Action]:
        if self._press is not None:
            self.dropped["press_while_pressed"] += 1
            return []
        out = []
        if self._points and t - self._points[-1][0] <= self.pause_s:
            self._before, self._points = self._points, []
        else:
            out = self._close()
        self._press = (t, x, y)
        self._drag = [(t, x, y)]
        return out

    def _on_release(self, t: float, x: float, y: float) -> list[Action]:
        if self._press is None:
            self.dropped["release_without_press"] += 1
            return []
        press, before, drag = self._press, self._before, self._drag
        self._press, self._before, self._drag = None, [], []
        hold = min(max(t - press[0], 0.0), MAX_HOLD_S)
        if self._add(drag, t, x, y) is False:
            self.dropped["drag_with_jump"] += 1
            return []
        travel = np.abs(np.diff(np.asarray(drag)[:, 1:], axis=0)).sum() if len(drag) > 1 else 0.0
        out = []
        if travel >= self.drag_min_px:
            out += self._emit(MM, before)
            out += self._emit(DD, drag, hold)
        elif before:
            end_slow = press[0] - before[-1][0]
            self._add(before, press[0], press[1], press[2])
            out += self._emit(PC, before, hold, end_slow)
        else:
            self.dropped["click_without_movement"] += 1
        return out

    def _close(self) -> list[Action]:
        points, self._points = self._points, []
        return self._emit(MM, points)

    def _emit(self, kind: int, points: list, hold: float = float("nan"),
              end_slow: float = 0.0) -> list[Action]:
        if not points:
            return []
        if len(points) < self.min_points:
            self.dropped["too_short"] += 1
            return []
        arr = np.asarray(points, dtype=float)
        return [Action(kind, arr[:, 0], arr[:, 1:], hold, end_slow)]


def segment(events: Iterable[Event], **params) -> tuple[list[Action], Counter]:
    """Actions of a stream (in order) and what was dropped, by reason."""
    seg = Segmenter(**params)
    actions: list[Action] = []
    for event in events:
        if not event.is_key:
            actions += seg.push(event)
    actions += seg.flush()
    return actions, seg.dropped


def _log(v) -> np.ndarray:
    return np.log1p(np.maximum(v, 0.0))


def action_features(action: Action) -> np.ndarray:
    """The action's vector (see ``FEATURE_NAMES``). Lengths in px, times in s; heavy-tailed
    quantities as log1p. Speeds from consecutive points; acceleration and jerk from successive
    speeds over the mid-point intervals."""
    t, xy = action.t, action.xy
    d = np.diff(xy, axis=0)
    dt = np.diff(t)
    step = np.hypot(d[:, 0], d[:, 1])
    path = step.sum()
    duration = t[-1] - t[0]
    chord = xy[-1] - xy[0]
    distance = float(np.hypot(*chord))
    speed = step / dt
    mid = (t[1:] + t[:-1]) / 2
    accel = np.diff(speed) / np.diff(mid) if len(speed) > 1 else np.zeros(1)
    jerk = (np.diff(accel) / np.diff((mid[1:] + mid[:-1]) / 2)) if len(accel) > 1 else np.zeros(1)
    heading = np.arctan2(d[:, 1], d[:, 0])
    turn = np.angle(np.exp(1j * np.diff(heading))) if len(heading) > 1 else np.zeros(1)
    seg_len = (step[1:] + step[:-1]) / 2 if len(step) > 1 else np.ones(1)
    curvature = np.abs(turn) / np.maximum(seg_len, 1.0)
    if distance > 0:
        normal = np.array([-chord[1], chord[0]]) / distance
        deviation = np.abs((xy - xy[0]) @ normal).max() / distance
    else:
        deviation = 0.0
    n = len(t)
    return np.array([
        float(action.kind == PC), float(action.kind == DD),
        _log(duration), _log(path), _log(distance), distance / path if path > 0 else 1.0,
        np.log(n),
        _log(path / duration), _log(speed.max()), _log(speed.std()),
        (mid[int(np.argmax(speed))] - t[0]) / duration,
        _log(accel.max()), _log(-accel.min()), _log(np.abs(accel).mean()),
        _log(np.abs(jerk).mean()),
        np.abs(turn).mean(), _log(curvature.mean()), min(deviation, 10.0),
        _log(action.end_slow_s), _log(0.0 if np.isnan(action.hold_s) else action.hold_s),
        _log(np.median(dt)), float(np.mean(dt < SHORT_DT_S)), _log(np.median(step)),
        _log(np.median(speed)), _log(dt.mean()), float(np.mean(dt > LONG_DT_S)),
    ])


def features(events: Iterable[Event], **params) -> tuple[np.ndarray, Counter]:
    """(n_actions, N_FEATURES) array for a stream, and the segmenter's dropped counts."""
    actions, dropped = segment(events, **params)
    if not actions:
        return np.empty((0, N_FEATURES)), dropped
    return np.array([action_features(a) for a in actions]), dropped
