"""Rebuild agent/model/prior.json (per-cell discriminability) from the Aalto dataset.

    python scripts/make_prior.py DIR        # DIR: the unpacked aalto-136m-dev folder

Only aggregates over all participants are written: one number per feature cell.
"""

import json
import sys
from pathlib import Path

from agent.model.prior import PRIOR_VERSION, discriminability, person_samples
from agent.sources.datasets import aalto


def main(root: str) -> None:
    people, report = aalto.load(Path(root))
    weights = discriminability([person_samples(person.sessions) for person in people])
    out = Path(__file__).resolve().parent.parent / "agent" / "model" / "prior.json"
    out.write_text(json.dumps({
        "version": PRIOR_VERSION,
        "source": f"Aalto 136M keystrokes, {len(people)} participants (aggregates only)",
        "cell_weights": [round(float(w), 5) for w in weights],
    }) + "\n")
    print(f"wrote {out} from {len(people)} participants")


if __name__ == "__main__":
    main(sys.argv[1])
