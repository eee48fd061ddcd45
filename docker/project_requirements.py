"""Print the project's direct dependencies (``[project].dependencies`` of pyproject.toml), one per line.

The image build installs them with ``-c constraints.txt`` in a layer of their own, before the project's
code is copied in, so a code change does not reinstall two gigabytes of dependencies::

    python docker/project_requirements.py pyproject.toml > /tmp/requirements.txt
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path


def project_dependencies(pyproject: Path) -> list[str]:
    """The requirement strings of ``[project].dependencies``; a clear error when the table is missing."""
    with pyproject.open("rb") as handle:
        data = tomllib.load(handle)
    dependencies = data.get("project", {}).get("dependencies")
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise ValueError(f"{pyproject}: expected [project].dependencies to be a list of requirement strings, "
                         f"got {dependencies!r}")
    return dependencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("pyproject", type=Path, help="path of pyproject.toml")
    args = parser.parse_args(argv)
    sys.stdout.write("".join(f"{requirement}\n" for requirement in project_dependencies(args.pyproject)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
