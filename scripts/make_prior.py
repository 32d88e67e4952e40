"""Rebuild agent/model/prior.json (per-cell discriminability) from the Aalto dataset.

    python scripts/make_prior.py DIR        # DIR: the unpacked aalto-136m-dev folder

Only aggregates over all participants are written: one number per feature cell.
"""

import json
import sys
from pathlib import Path

import numpy as np

from agent.features.keystroke import keystrokes, samples
from agent.model.prior import PRIOR_VERSION, discriminability
from agent.sources.datasets import aalto


def main(root: str) -> None:
    people, report = aalto.load(Path(root))
    per_person = []
    for person in people:
        tables = [samples(keystrokes(s)) for s in person.sessions]
        cells = np.concatenate([c for c, _ in tables])
        values = np.log(np.maximum(np.concatenate([v for _, v in tables]), 1.0))
        per_person.append((cells, values))
    weights = discriminability(per_person)
    out = Path(__file__).resolve().parent.parent / "agent" / "model" / "prior.json"
    out.write_text(json.dumps({
        "version": PRIOR_VERSION,
        "source": f"Aalto 136M keystrokes, {len(people)} participants (aggregates only)",
        "cell_weights": [round(float(w), 5) for w in weights],
    }) + "\n")
    print(f"wrote {out} from {len(people)} participants")


if __name__ == "__main__":
    main(sys.argv[1])
