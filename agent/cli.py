"""The ``cadence`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from agent import __version__
from agent.sources.loading import LoadReport, SourceError

log = logging.getLogger("cadence")


def _at_least(low: int):
    """An argparse type: a whole number no smaller than ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value
    return parse


def _arrival_delay(text: str) -> int:
    """``--arrival-delay-ms``: whole milliseconds, 0 to a minute."""
    value = _at_least(0)(text)
    if value > 60_000:
        raise argparse.ArgumentTypeError(f"{value} is above 60000 (a minute)")
    return value


def _enrol_keystrokes(text: str) -> int:
    """``--enrol-keystrokes``: the policy's own range (enrol_keystrokes in settings)."""
    from agent.policy import PolicyError, validate
    try:
        return validate("enrol_keystrokes", _at_least(0)(text), "--enrol-keystrokes")
    except PolicyError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--enrol-keystrokes: ")) from None


def _people(args):
    """The dataset's people (a seeded sample of ``--users``), read as they are iterated."""
    if args.format == "aalto":
        from agent.sources.datasets import aalto as source
    elif args.format == "balabit":
        from agent.sources.datasets import balabit as source
    else:
        from agent.sources import replay as source
    return source.people(Path(args.dir), users=args.users, seed=args.seed)


def _progress(total: int, what: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=what, unit="user", file=sys.stderr, disable=None, leave=False)


def _report(result: dict, args, title: str, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(title)
        for line in lines:
            print("  " + line)


def _loaded(report: LoadReport) -> dict:
    """The load report, once the files are read; what was skipped is said on stderr, at any
    log level (each row with -v), so no figure is read off a dataset that lost rows unsaid."""
    rows, files = report.skipped_rows, len(report.failed_files)
    if rows or files:
        print(f"cadence: {rows} malformed row{'' if rows == 1 else 's'} skipped, "
              f"{files} file{'' if files == 1 else 's'} unreadable (run with -v to see each)",
              file=sys.stderr)
    return report.as_dict()


def cmd_eval_keystroke(args) -> int:
    from agent.evaluation import keystroke
    people, report = _people(args).load()
    with _progress(len(people), "keystroke eval") as bar:
        result = keystroke.evaluate(people, enrol=args.enrol, seed=args.seed, progress=bar.update)
    result["load"] = _loaded(report)
    _report(result, args, f"Free-text keystrokes, {args.format}: {result['users']} users "
            f"({result['skipped']} skipped), enrol {args.enrol} sessions, seed {args.seed}", [
        f"EER k=1: mean {100 * result['eer_mean']:.2f}%  median {100 * result['eer_median']:.2f}%",
        f"EER k=2: mean {100 * result['eer_mean_k2']:.2f}%",
        f"EER k=5: mean {100 * result['eer_mean_k5']:.2f}%",
        f"fit {result['fit_ms_mean']:.1f} ms/user, score {result['score_ms_mean']:.3f} ms/test",
    ])
    return 0


def _settings():
    from agent import policy
    from agent.system.paths import default_paths
    paths = default_paths()
    return paths, policy.load(paths.settings, last_good=paths.data / "policy.last-good.json")


def with_enrolment(settings, keystrokes: int | None):
    """``cadence run --enrol-keystrokes N``: this run's enrolment length, unless the
    organisation's policy sets it (managed keys win over the user's)."""
    import dataclasses
    if keystrokes is None:
        return settings
    if "enrol_keystrokes" in settings.managed:
        log.warning("--enrol-keystrokes is ignored: the organisation's policy sets "
                    "enrol_keystrokes (%d)", settings.policy.enrol_keystrokes)
        return settings
    return dataclasses.replace(settings, policy=dataclasses.replace(
        settings.policy, enrol_keystrokes=keystrokes))


def cmd_run(args) -> int:
    import faulthandler
    import signal
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID`: where every thread is, on stderr, even
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # in start-up; no data
    from agent.runtime import Agent
    from agent.system.instance import AlreadyRunning
    paths, settings = _settings()
    settings = with_enrolment(settings, args.enrol_keystrokes)
    tray = None
    if not args.no_tray:
        from agent.system import autostart
        from agent.tray import Tray
        # A user who may not quit may not stop it starting at login either; a machine-wide
        # entry is the administrator's.
        choose = settings.policy.allow_quit and autostart.status().get("can_toggle", False)
        tray = Tray({"autostart": autostart.toggle}, settings.policy.allow_pause,
                    settings.policy.allow_quit, autostart.is_enabled if choose else None,
                    managed=tuple(sorted(settings.managed)))
    agent = Agent(paths, settings, tray=tray)
    if tray is not None:
        tray.actions.update({
            "pause": lambda: _request(paths, "pause"),
            "resume": lambda: _request(paths, "resume"),
            "status": lambda: agent._notify("Cadence status", _status_text(agent.status())),
            "open_log": lambda: _open(paths.audit),
            "about": lambda: agent._notify("About Cadence", f"Cadence {__version__}: "
                                           "recognises how you type, never what you type."),
            "quit": tray.stop,
        })
    try:
        agent.start()
    except AlreadyRunning as exc:
        # exit 0: a login item or LaunchAgent (KeepAlive on failure) must not restart-loop
        print(f"cadence: {exc}", file=sys.stderr)
        return 0
    import signal
    signal.signal(signal.SIGTERM, lambda *_: (tray.stop() if tray else agent.stopping.set()))
    try:
        if tray is not None:
            tray.run(lambda: None)
        else:
            agent.wait_stopped()
    except KeyboardInterrupt:
        pass
    finally:
        agent.stop()
    return 0


def _request(paths, name: str) -> None:
    from agent.system.paths import private_dir
    (private_dir(paths.requests) / name).touch()


def _open(path) -> None:
    import subprocess
    opener = {"win32": ["cmd", "/c", "start", ""], "darwin": ["open"]}.get(sys.platform,
                                                                          ["xdg-open"])
    try:
        subprocess.Popen([*opener, str(path)], start_new_session=True)
    except OSError:
        log.error("cannot open %s", path)


def _running(paths) -> dict | None:
    """The running agent's published state, or None when no agent holds the instance lock."""
    from agent.system.instance import AlreadyRunning, InstanceLock
    probe = InstanceLock(paths.instance_lock)
    try:
        probe.acquire()
    except AlreadyRunning:
        try:
            return json.loads(paths.state.read_text())
        except (OSError, ValueError):
            return {"state": "starting"}
    probe.release()
    return None


def _status_text(status: dict) -> str:
    state = status.get("state", "?")
    if state == "learning":
        state += f" {status.get('progress', 0)}%"
    lines = [f"state: {state}"]
    for key in ("reason", "detail", "verdict", "trust", "last_score", "action", "quality"):
        if status.get(key) is not None:
            lines.append(f"{key}: {status[key]}")
    if status.get("key_protection"):
        lines.append(f"profile key: {status['key_protection']} - {status.get('key_note', '')}")
    if status.get("managed"):
        lines.append("managed by policy: " + ", ".join(status["managed"]))
    for problem in status.get("policy_errors", []):
        lines.append("policy error: " + problem)
    return "\n".join(lines)


def cmd_status(args) -> int:
    paths, _ = _settings()
    status = _running(paths)
    if status is None:
        status = {"state": "not running"}
    print(json.dumps(status, sort_keys=True) if args.json else _status_text(status))
    return 0 if status["state"] != "not running" else 3


def cmd_enroll(args) -> int:
    paths, _ = _settings()
    if not args.restart:
        print("cadence: enrolment runs by itself while the agent learns; "
              "use --restart to discard the profile and learn again", file=sys.stderr)
        return 2
    return _discard(paths, "enroll-restart",
                    "asked the running agent to discard the profile and learn again",
                    "profile discarded; the agent will learn again when it next starts")


def cmd_forget(args) -> int:
    paths, _ = _settings()
    if not args.yes:
        if not sys.stdin.isatty():
            print("cadence: forget deletes your typing profile and its key; "
                  "confirm with --yes", file=sys.stderr)
            return 2
        if input("Delete your typing profile and its key? [y/N] ").strip().lower() != "y":
            print("nothing deleted")
            return 1
    return _discard(paths, "forget", "asked the running agent to delete the profile and its key",
                    "profile and key deleted")


def _discard(paths, request: str, asked: str, done: str) -> int:
    """Delete the profile and its key: through the running agent (which then learns again),
    or directly when none runs."""
    if _running(paths) is not None:
        _request(paths, request)
        print(asked)
    else:
        from agent.store import SERVICE, ProfileStore, StoreError
        try:
            result = ProfileStore(paths.data).forget()
        except StoreError as exc:
            print(f"cadence: {exc}", file=sys.stderr)
            return 1
        if result["keyring_unreachable"]:
            print(f"cadence: profile files deleted, but the OS keyring could not be reached: "
                  f"its Cadence key (service {SERVICE}) may remain; unlock the keyring and run "
                  "this again", file=sys.stderr)
            return 1
        print(done)
    return 0


def cmd_doctor(args) -> int:
    from agent.doctor import checks
    paths, settings = _settings()
    results = checks(paths, settings)
    if args.json:
        print(json.dumps(results, sort_keys=True))
    else:
        for item in results:
            mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[item["level"]]
            print(f"[{mark}] {item['check']}: {item['detail']}")
    return 1 if any(item["level"] == "fail" for item in results) else 0


def cmd_autostart(args) -> int:
    from agent.system import autostart
    try:
        if args.action == "enable":
            autostart.enable(per_machine=args.machine)
        elif args.action == "disable":
            autostart.disable(per_machine=args.machine)
    except (autostart.AutostartError, OSError) as exc:
        print(f"cadence: autostart: {exc}", file=sys.stderr)
        return 1
    state = autostart.status()
    if args.json:
        print(json.dumps(state, sort_keys=True))
    else:
        print(f"start at login: {'on' if state['enabled'] else 'off'} - {state['detail']}")
        print(f"  {state['method']}: {state['path']}" + (" (managed)" if state["managed"] else ""))
    return 0


def cmd_eval_protocol(args) -> int:
    """eval continuous / injection / mouse: the protocol module's evaluate() and
    summary_lines()."""
    import importlib
    module = importlib.import_module(f"agent.evaluation.{args.protocol}")
    people = _people(args)   # injection judges one person at a time: read as it goes
    report = people.report
    if args.protocol != "injection":
        people, _ = people.load()
    options = {"seed": args.seed}
    if args.protocol == "continuous":
        options["enrol"] = args.enrol
    if args.protocol == "injection":
        options["policy"] = args.sensitivity
        options["keyboard_attached"] = args.keyboard_attached
        options["arrival_delay_ms"] = args.arrival_delay_ms
    with _progress(len(people), f"{args.protocol} eval") as bar:
        result = module.evaluate(people, progress=bar.update, **options)
    if args.protocol == "mouse" and args.format == "balabit":
        from agent.sources.datasets import balabit
        if balabit.has_challenge(Path(args.dir)):  # test sessions of unsampled users: unscored
            tests = balabit.load_challenge(Path(args.dir), report)
            result.update(module.evaluate_challenge(people, tests))
    result["load"] = _loaded(report)
    _report(result, args, f"{args.protocol.capitalize()}, {args.format}, seed {args.seed}:",
            module.summary_lines(result))
    return 0


def cmd_bench(args) -> int:
    from agent.evaluation import bench
    try:
        result = bench.run(duration_s=args.duration, seed=args.seed, x11=args.x11,
                           display=args.display)
    except bench.BenchError as exc:
        print(f"cadence: bench: {exc}", file=sys.stderr)
        return 1
    _report(result, args, f"Overhead ({result['mode']}, {args.duration:g} s per phase, "
            f"seed {args.seed}):", bench.summary_lines(result))
    return 0


def _eval_parser(sub, name: str, formats: list[str], handler, help_text: str):
    p = sub.add_parser(name, help=help_text)
    p.add_argument("dir", help="dataset or recordings folder")
    p.add_argument("--format", choices=formats, required=True)
    p.add_argument("--users", type=_at_least(1), default=None, help="a seeded sample of N users")
    p.add_argument("--seed", type=_at_least(0), default=0)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=handler)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cadence", description="Continuous behavioural authentication on the endpoint: "
        "who is typing, never what.")
    parser.add_argument("--version", action="version", version=f"cadence {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every skipped row")
    commands = parser.add_subparsers(dest="command", required=True)
    evaluate = commands.add_parser("eval", help="measure on a dataset (EVALUATION.md)")
    protocols = evaluate.add_subparsers(dest="protocol", required=True)
    ks = _eval_parser(protocols, "keystroke", ["aalto", "recording"], cmd_eval_keystroke,
                      "free-text keystroke EER")
    ks.add_argument("--enrol", type=_at_least(1), default=10,
                    help="enrolment sessions (default 10, at most 10)")
    cont = _eval_parser(protocols, "continuous", ["aalto", "recording"], cmd_eval_protocol,
                        "continuous authentication: ANIA, ANGA")
    cont.add_argument("--enrol", type=_at_least(1), default=10,
                      help="enrolment sessions (default 10, at most 10)")
    _eval_parser(protocols, "mouse", ["balabit", "recording"], cmd_eval_protocol,
                 "mouse dynamics AUC (and the Balabit challenge protocol when labelled)")
    inj = _eval_parser(protocols, "injection", ["aalto", "recording"], cmd_eval_protocol,
                       "keystroke injection: human false positives, keys to detect")
    inj.add_argument("--sensitivity", choices=["relaxed", "balanced", "strict"],
                     default="balanced", help="injection rule preset (default balanced)")
    inj.add_argument("--keyboard-attached", action=argparse.BooleanOptionalAction, default=True,
                     help="the injector is seen attaching, as the agent sees a USB keyboard "
                          "arrive, and every human stream opens on a keyboard attached just "
                          "before (also counted: one arriving before every pause) (default); "
                          "--no-keyboard-attached: timing alone")
    inj.add_argument("--arrival-delay-ms", type=_arrival_delay, default=0, metavar="MS",
                     help="the injector's arrival seen 0 to MS later (Windows and macOS poll "
                          "once a second: 1000); default 0, as on X11")

    run = commands.add_parser("run", help="start the agent (tray included)")
    run.add_argument("--no-tray", action="store_true", help="headless: no tray icon")
    run.add_argument("--enrol-keystrokes", type=_enrol_keystrokes, default=None,
                     help="typing to learn from before protecting (overrides settings)")
    run.set_defaults(handler=cmd_run)
    status = commands.add_parser("status", help="the running agent's state")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)
    enroll = commands.add_parser("enroll", help="enrolment control")
    enroll.add_argument("--restart", action="store_true",
                        help="discard the profile and learn again")
    enroll.set_defaults(handler=cmd_enroll)
    forget = commands.add_parser("forget", help="delete the profile and its key")
    forget.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    forget.set_defaults(handler=cmd_forget)
    doctor = commands.add_parser("doctor", help="check display, input, keyring, lock method")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(handler=cmd_doctor)
    autostart = commands.add_parser("autostart", help="start at login: enable, disable, status")
    autostart.add_argument("action", choices=["enable", "disable", "status"])
    autostart.add_argument("--machine", action="store_true",
                           help="for every user (administrator/root): the machine-wide entry")
    autostart.add_argument("--json", action="store_true")
    autostart.set_defaults(handler=cmd_autostart)
    bench = commands.add_parser("bench", help="measure the agent's overhead (EVALUATION.md)")
    bench.add_argument("--json", action="store_true", help="one JSON object on stdout")
    bench.add_argument("--x11", action="store_true",
                       help="real hooks: run `cadence run --no-tray` on X, type through XTest")
    bench.add_argument("--display", default=None,
                       help="with --x11: this X display (keys are typed into it) instead of a "
                            "private Xvfb")
    bench.add_argument("--duration", type=float, default=60.0,
                       help="seconds of each phase, idle and typing (default 60)")
    bench.add_argument("--seed", type=_at_least(0), default=0)
    bench.set_defaults(handler=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.handler(args)
    except (SourceError, ValueError) as exc:
        print(f"cadence: {exc}", file=sys.stderr)
        return 2
