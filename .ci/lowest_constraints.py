"""Print pip constraints pinning every runtime dependency at the lowest version pyproject.toml allows.

`make test-lowest` installs bie with these into a second venv and runs the CLI tests there, so the
declared floors are tested floors. Two exceptions, both printed as comments:
torch is installed from the same pinned CPU wheel as the main venv (TORCH_PIN in the Makefile; any
other torch means a multi-GB download), and click, which bie does not import, is pinned at the floor
the lowest Typer declares (older Typer runs on the click package; Typer 0.29 vendors its own copy).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

#: the click floor that bie's lowest Typer (0.15.0) declares
CLICK_FLOOR = "8.0.0"
NOT_PINNED = {"torch": "installed from the pinned CPU wheel (see the Makefile)"}


def lowest_pins(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = []
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][^,;\s]*)(?:\s*,\s*<\s*[0-9][^,;\s]*)?", requirement)
        if match is None:
            sys.exit(f"cannot find a lower bound in {requirement!r}: every dependency needs NAME>=FLOOR")
        name, floor = match.groups()
        if name in NOT_PINNED:
            lines.append(f"# {name}: {NOT_PINNED[name]}")
        else:
            lines.append(f"{name}=={floor}")
    lines.append(f"click=={CLICK_FLOOR}")
    return lines


if __name__ == "__main__":
    print("\n".join(lowest_pins(Path(__file__).resolve().parent.parent / "pyproject.toml")))
