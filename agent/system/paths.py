"""Where the agent keeps things: platformdirs' per-user folders (or one root for tests/kiosks).

Set ``CADENCE_HOME`` to put everything under one folder (tests, portable installs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "cadence"


@dataclass(frozen=True)
class Paths:
    data: Path
    config: Path
    logs: Path
    runtime: Path

    @property
    def settings(self) -> Path:
        return self.config / "settings.toml"

    @property
    def audit(self) -> Path:
        return self.logs / "audit.jsonl"

    @property
    def state(self) -> Path:
        return self.runtime / "state.json"

    @property
    def instance_lock(self) -> Path:
        return self.runtime / "agent.lock"

    @property
    def requests(self) -> Path:
        return self.runtime / "requests"


def default_paths() -> Paths:
    home = os.environ.get("CADENCE_HOME")
    if home:
        root = Path(home)
        return Paths(root / "data", root / "config", root / "logs", root / "run")
    runtime = platformdirs.user_runtime_dir(APP, appauthor=False)
    return Paths(Path(platformdirs.user_data_dir(APP, appauthor=False)),
                 Path(platformdirs.user_config_dir(APP, appauthor=False)),
                 Path(platformdirs.user_log_dir(APP, appauthor=False)), Path(runtime))


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by the user only (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    return path
