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


def _loader(fmt: str):
    if fmt == "aalto":
        from agent.sources.datasets import aalto
        return aalto.load
    from agent.sources import replay
    return replay.load


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


def _load(args) -> tuple[list, LoadReport]:
    report = LoadReport()
    people, report = _loader(args.format)(Path(args.dir), users=args.users, seed=args.seed,
                                          report=report)
    if report.skipped_rows or report.failed_files:
        log.warning("%d malformed rows skipped, %d files unreadable (see messages above)",
                    report.skipped_rows, len(report.failed_files))
    return people, report


def cmd_eval_keystroke(args) -> int:
    from agent.evaluation import keystroke
    people, report = _load(args)
    with _progress(len(people), "keystroke eval") as bar:
        result = keystroke.evaluate(people, enrol=args.enrol, seed=args.seed, progress=bar.update)
    result["load"] = report.as_dict()
    _report(result, args, f"Free-text keystrokes, {args.format}: {result['users']} users "
            f"({result['skipped']} skipped), enrol {args.enrol} sessions, seed {args.seed}", [
        f"EER k=1: mean {100 * result['eer_mean']:.2f}%  median {100 * result['eer_median']:.2f}%",
        f"EER k=2: mean {100 * result['eer_mean_k2']:.2f}%",
        f"EER k=5: mean {100 * result['eer_mean_k5']:.2f}%",
        f"fit {result['fit_ms_mean']:.1f} ms/user, score {result['score_ms_mean']:.3f} ms/test",
    ])
    return 0


def _eval_parser(sub, name: str, formats: list[str], handler, help_text: str):
    p = sub.add_parser(name, help=help_text)
    p.add_argument("dir", help="dataset or recordings folder")
    p.add_argument("--format", choices=formats, required=True)
    p.add_argument("--users", type=int, default=None, help="a seeded sample of N users")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=handler)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cadence", description=__doc__)
    parser.add_argument("--version", action="version", version=f"cadence {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every skipped row")
    commands = parser.add_subparsers(dest="command", required=True)
    evaluate = commands.add_parser("eval", help="measure on a dataset (EVALUATION.md)")
    protocols = evaluate.add_subparsers(dest="protocol", required=True)
    ks = _eval_parser(protocols, "keystroke", ["aalto", "recording"], cmd_eval_keystroke,
                      "free-text keystroke EER")
    ks.add_argument("--enrol", type=int, default=10, help="enrolment sessions (default 10)")
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
