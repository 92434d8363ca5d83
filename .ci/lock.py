"""Print constraints.txt: every package installed in a venv, pinned (``make lock``).

Usage: ``python3 .ci/lock.py VENV_PYTHON > constraints.txt``. Local version labels are
dropped (``torch==2.13.0+cpu`` becomes ``torch==2.13.0``), so the file also holds on
machines whose torch wheel comes from PyPI; promptrev itself (editable) is left out.
"""

import subprocess
import sys
from datetime import datetime, timezone

HEADER = """\
# Exact versions of everything `make install` puts in .venv (pip -c / PIP_CONSTRAINT).
# The tests passed with these; pyproject.toml keeps loose ranges for library users.
# Refresh: `make lock`, then `make clean check`, then commit this file.
# Written by .ci/lock.py on {date} for Python {python}.
"""


def main(python: str) -> None:
    """Freeze the venv of ``python`` and print the pins."""
    frozen = subprocess.run([python, "-m", "pip", "freeze", "--all", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    pins = sorted((line.split("+")[0] for line in frozen.splitlines()
                   if "==" in line and not line.lower().startswith("promptrev==")),
                  key=str.lower)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    sys.stdout.write(HEADER.format(date=date, python=version) + "\n".join(pins) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
