"""The tray icon: a view of the agent's state, drawn with Pillow, run by pystray.

The icon's picture and tooltip show the state; the menu offers status, pause (if policy
allows), the audit log, about, and quit (if policy allows). ``Icon.run`` owns the main thread
(macOS requires it). Other threads call :meth:`Tray.show` and :meth:`Tray.notify`, which only
hand the status or the balloon over: a painter thread of the tray's own updates the icon, so the
agent never waits for the desktop.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from functools import lru_cache

from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

X_CALL_TIMEOUT_S = 5.0  # the longest the painter waits for the X icon's main loop
MAX_NOTES = 5  # balloons kept while the desktop is slow to show them (the newest)

COLOURS = {
    "learning": (66, 133, 244), "protecting": (52, 168, 83), "alert": (251, 188, 5),
    "locked": (234, 67, 53), "paused": (154, 160, 166), "degraded": (255, 109, 0),
    "error": (120, 40, 40), "starting": (154, 160, 166),
}


@lru_cache(maxsize=64)
def icon_image(state: str, progress: int = 0, size: int = 64) -> Image.Image:
    """A crisp square icon: a shield-like disc in the state's colour; learning shows its
    progress as a filled arc, paused two bars, alert and locked a bar across."""
    scale = 4  # draw large, downsample: crisp edges at 16-64 px
    big = size * scale
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    colour = COLOURS.get(state, COLOURS["error"])
    pad = big // 16
    box = (pad, pad, big - pad, big - pad)
    if state == "learning":
        draw.ellipse(box, fill=(220, 230, 245, 255))
        draw.pieslice(box, -90, -90 + int(360 * max(0, min(progress, 100)) / 100), fill=colour)
    else:
        draw.ellipse(box, fill=colour)
    inner = big // 4
    if state == "paused":
        w = big // 10
        for x in (big // 2 - 2 * w, big // 2 + w):
            draw.rectangle((x, inner, x + w, big - inner), fill="white")
    elif state in ("alert", "locked", "error", "degraded"):
        draw.rectangle((inner, big // 2 - big // 14, big - inner, big // 2 + big // 14),
                       fill="white")
    elif state == "protecting":
        draw.ellipse((big // 2 - big // 8, big // 2 - big // 8, big // 2 + big // 8,
                      big // 2 + big // 8), fill="white")
    return img.resize((size, size), Image.LANCZOS)


def tooltip(status: dict) -> str:
    state = status.get("state", "starting")
    text = f"Cadence: {state}"
    if state == "learning":
        text += f" {status.get('progress', 0)}%"
    reason = status.get("detail") or status.get("reason")
    if reason:
        text += f": {reason}"
    return text


class Tray:
    """pystray icon; ``actions`` maps menu entries to callables run by the agent."""

    def __init__(self, actions: dict[str, Callable[[], None]], allow_pause: bool,
                 allow_quit: bool, login_item: Callable[[], bool] | None = None,
                 managed: tuple[str, ...] = ()) -> None:
        """``login_item``: when given (policy allows the user to choose), a "Start at login"
        check box showing its value and running the ``autostart`` action. ``managed``: the
        settings the organisation's policy fixes, shown as a locked (disabled) line."""
        import pystray
        self._pystray = pystray
        self.actions = actions
        self._shown: tuple | None = None
        self._changed = threading.Condition()
        self._painting = False   # the painter thread runs (from run() on)
        self._dirty = self._force = self._stopped = False
        self._notes: list[tuple[str, str]] = []  # balloons the painter is to show
        self._x: _XorgCalls | None = None
        items = [pystray.MenuItem(lambda _: tooltip(self._status), None, enabled=False),
                 pystray.MenuItem("Show status", self._do("status"))]
        if managed:
            items.append(pystray.MenuItem("Set by your organisation: " + ", ".join(managed),
                                          None, enabled=False))
        if allow_pause:   # while paused the same line ends the pause
            items.append(pystray.MenuItem(
                lambda _: "Resume protection" if self._paused() else "Pause protection",
                lambda icon=None, item=None: self._do(
                    "resume" if self._paused() else "pause")(icon, item)))
        if login_item is not None:
            items.append(pystray.MenuItem("Start at login", self._do("autostart"),
                                          checked=lambda _: login_item()))
        items += [pystray.MenuItem("Open audit log", self._do("open_log")),
                  pystray.MenuItem("About Cadence", self._do("about"))]
        if allow_quit:
            items.append(pystray.MenuItem("Quit", self._do("quit")))
        self._status: dict = {"state": "starting"}
        self.icon = pystray.Icon("cadence", icon_image("starting"), tooltip(self._status),
                                 menu=pystray.Menu(*items))

    def _do(self, name: str):
        def handler(icon=None, item=None):
            action = self.actions.get(name)
            if action is not None:
                action()
        return handler

    def _paused(self) -> bool:
        return self._status.get("state") == "paused"

    def show(self, status: dict) -> None:
        """Show this status (any thread; never waits for the desktop). Before the icon runs it
        is set at once; then the painter thread draws the newest status it has been given."""
        with self._changed:
            self._status = status
            if self._painting:
                self._dirty = True
                self._changed.notify()
                return
        self._paint(status)

    def redraw(self) -> None:
        """Draw the icon again, changed or not (it docks in a tray that appeared since)."""
        with self._changed:
            self._dirty = self._force = True
            self._changed.notify()

    def _painter(self) -> None:
        while True:
            with self._changed:
                while not self._dirty and not self._stopped:
                    self._changed.wait()  # nothing to show, no wake-ups
                if self._stopped:
                    return
                status, force, notes = self._status, self._force, self._notes
                self._dirty = self._force = False
                self._notes = []
            try:
                self._paint(status, force)
            except Exception:  # noqa: BLE001 - a broken tray must not stop the painter
                log.exception("the tray icon could not be updated")
            for title, message in notes:
                self._balloon(title, message)

    def _paint(self, status: dict, force: bool = False) -> None:
        """Update picture and tooltip; nothing when nothing visible changed."""
        key = (status.get("state"), status.get("progress", 0) // 5, status.get("reason"))
        if key == self._shown and not force:
            return
        self._shown = key
        image = icon_image(status.get("state", "error"), int(status.get("progress", 0)))
        if self._x is not None:
            self._x.update(image, tooltip(status))
            return
        self.icon.icon = image
        self.icon.title = tooltip(status)
        try:
            self.icon.update_menu()
        except Exception:  # some backends have no menu (xorg)
            pass

    def notify(self, title: str, message: str) -> None:
        """A balloon from the icon (any thread; never waits: the painter shows it, once the
        icon runs if it does not yet)."""
        with self._changed:
            self._notes = [*self._notes[-(MAX_NOTES - 1):], (title, message)]
            self._dirty = True
            self._changed.notify()

    def _balloon(self, title: str, message: str) -> None:
        try:
            self.icon.notify(message, title)
        except Exception:  # noqa: BLE001 - no balloons on this backend (xorg)
            log.debug("tray notification unavailable on this backend")

    def run(self, setup: Callable[[], None]) -> None:
        """Run the icon on this (main) thread; ``setup`` starts the agent beside it."""
        def _setup(icon):
            with self._changed:  # from here on only the painter touches the icon; it starts by
                self._painting = self._dirty = self._force = True  # drawing the newest status
            if type(icon).__module__ == "pystray._xorg":
                try:
                    self._x = _XorgCalls(icon)
                except Exception:  # noqa: BLE001 - no second X connection: pystray's own way
                    log.exception("the tray cannot open its X connection")
            if self._x is not None:
                self._x.show()
                threading.Thread(target=_redock_on_new_tray, args=(self,), daemon=True,
                                 name="cadence-tray-manager").start()
            else:
                icon.visible = True
            threading.Thread(target=self._painter, daemon=True, name="cadence-tray").start()
            setup()
        self.icon.run(setup=_setup)

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()
        self.icon.stop()


class _XorgCalls:
    """pystray's X backend has an update run by its main loop: the calling thread sends the
    icon's window a client message on the icon's own X connection and waits for the loop's
    answer. python-xlib then deadlocks both threads when the loop's round trip meets the
    caller's flush (a thread showing states in a row froze the icon, and with it the agent's
    worker, within seconds: tests/test_tray.py). Here the same messages go out on a connection
    of our own, so the icon's connection is used by its main loop alone; and the wait for an
    answer is bounded. (The loop names its thread late, so this also never needs it.)"""

    def __init__(self, icon) -> None:
        from Xlib import display as xdisplay
        self.icon = icon
        self.display = xdisplay.Display()
        self.window = self.display.create_resource_object("window", icon._window.id)
        self._atoms: dict[str, int] = {}
        self._late = False

    def call(self, method: str) -> None:
        """Have the icon's main loop run pystray's ``method`` (its message: _PYSTRAY_ and the
        method's name in capitals) and wait, at most X_CALL_TIMEOUT_S, for it to finish."""
        from Xlib import X
        from Xlib.protocol import event
        atom = self._atoms.get(method)
        if atom is None:
            atom = self._atoms[method] = self.display.intern_atom(f"_PYSTRAY_{method.upper()}")
        self.window.send_event(event.ClientMessage(window=self.window, client_type=atom,
                                                   data=(32, (X.CurrentTime, 0, 0, 0, 0))),
                               event_mask=X.NoEventMask)
        self.display.flush()
        try:
            result = self.icon._queue.get(timeout=X_CALL_TIMEOUT_S)
        except queue.Empty:
            if not self._late:
                log.error("the tray icon's X main loop did not answer within %g s",
                          X_CALL_TIMEOUT_S)
            self._late = True  # its answer, when it comes, is taken by the next call
            return
        if result is not True:
            log.error("the tray icon could not be updated", exc_info=result)

    def show(self) -> None:
        self.call("_update_icon")
        self.call("_show")
        self.icon._visible = True

    def update(self, image: Image.Image, title: str) -> None:
        self.icon._icon, self.icon._icon_valid = image, False
        self.call("_update_icon")
        if title != self.icon._title:
            self.icon._title = title
            self.call("_update_title")


def _redock_on_new_tray(tray: Tray) -> None:
    """pystray's X backend docks when the icon is shown or redrawn, never again: a panel that
    starts after the agent (autostart races it at login) or restarts would leave the icon
    undocked for good. A new tray announces itself (freedesktop system tray spec: a MANAGER
    client message to the root window, naming its selection); on each, redraw the icon, which
    docks it. Blocks on X events, so it costs no wake-ups."""
    try:
        from Xlib import X, display as xdisplay

        d = xdisplay.Display()
        manager = d.intern_atom("MANAGER")
        selection = d.intern_atom(f"_NET_SYSTEM_TRAY_S{d.get_default_screen()}")
        d.screen().root.change_attributes(event_mask=X.StructureNotifyMask)
        while True:
            event = d.next_event()
            if (event.type == X.ClientMessage and event.client_type == manager
                    and event.data[1][1] == selection):
                log.info("a system tray appeared: docking the icon")
                tray.redraw()
    except Exception:  # noqa: BLE001 - the X server went away: the agent goes on without it
        log.debug("tray watcher stopped", exc_info=True)
