"""Install what the test suite needs besides its Python packages, only what is missing, then say what is there.

Run by the README's test command and so by `.ci/run`, after `pip install -e '.[test]'` and before pytest:

    .venv/bin/python handyshop_migration_tests/setup_machine.py [--dry-run]

- Chromium for the browser test (test_ui.py): Debian's package at /usr/bin/chromium (Playwright's own browser
  download cannot work on these machines).
- Node.js 18 or newer with npm for the Node.js client tests (support/node/): Debian's `nodejs npm` when `node` is
  missing or older.
- The Node.js client's npm packages: `npm ci` in support/node/ when node_modules does not hold exactly what
  package-lock.json pins.

Standard library only (it runs before anything else is known to work), idempotent, and quick when everything is
there: it then runs nothing but `node --version`. Each failure is one line naming what to do; exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
NODE_MINIMUM = 18
NODE_DIR = Path(__file__).resolve().parent / "support" / "node"
SETUP_COMMAND = ".venv/bin/python handyshop_migration_tests/setup_machine.py"


class SetupFailed(Exception):
    """One line: what is missing and what to do."""


def node_version(node: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a `node` binary, or None if it does not run or prints no version."""
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)\S*", out.strip())
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def find_node(path: str | None = None) -> str | None:
    """The first `node` on PATH that is Node.js 18 or newer (an old one earlier on PATH is passed over)."""
    search = os.environ.get("PATH", "") if path is None else path
    seen: set[str] = set()
    for directory in search.split(os.pathsep):
        candidate = shutil.which("node", path=directory) if directory else None
        if candidate is None or candidate in seen:
            continue
        seen.add(candidate)
        version = node_version(candidate)
        if version is not None and version[0] >= NODE_MINIMUM:
            return candidate
    return None


def find_npm(node: str) -> str | None:
    """npm beside that node (nodesource and Debian both install it there), else the first on PATH."""
    beside = Path(node).parent / "npm"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("npm")


def node_modules_match_lock(node_dir: Path = NODE_DIR) -> bool:
    """True if node_modules holds every package of package-lock.json at its locked version."""
    try:
        lock = json.loads((node_dir / "package-lock.json").read_text())
    except (OSError, ValueError):
        return False
    for path, meta in lock.get("packages", {}).items():
        if not path:
            continue  # the project itself
        try:
            installed = json.loads((node_dir / path / "package.json").read_text())
        except (OSError, ValueError):
            if meta.get("optional"):
                continue  # an optional dependency npm may skip on this platform
            return False
        if installed.get("version") != meta.get("version"):
            return False
    return True


def apt_packages_needed(chromium: Path, path: str | None = None) -> list[str]:
    """Debian packages to install: chromium if its binary is missing, nodejs/npm if no usable node/npm."""
    packages = []
    if not (chromium.is_file() and os.access(chromium, os.X_OK)):
        packages.append("chromium")
    node = find_node(path)
    if node is None:
        packages += ["nodejs", "npm"]
    elif find_npm(node) is None:
        packages.append("npm")
    return packages


def apt_install(packages: list[str]) -> None:
    """`apt-get update` then `apt-get install -y` of Debian's packages; one line if that cannot be done."""
    command = f"apt-get update && apt-get install -y {' '.join(packages)}"
    if shutil.which("apt-get") is None:
        raise SetupFailed(
            f"missing {', '.join(packages)}, and no apt-get here to install them: install them by hand, then run "
            f"{SETUP_COMMAND} again"
        )
    if os.geteuid() != 0:
        raise SetupFailed(f"missing {', '.join(packages)}: run `{command}` as root (or this script as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"setup: installing Debian's {' '.join(packages)}", flush=True)
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        done = subprocess.run(step, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise SetupFailed(f"`{' '.join(step)}` failed ({last}); fix that, then run {SETUP_COMMAND} again")


def npm_ci(npm: str, node: str, node_dir: Path = NODE_DIR) -> None:
    """`npm ci` in the Node.js client's folder (exactly the locked packages), with that node first on PATH."""
    print(f"setup: installing the Node.js client's npm packages (npm ci in {node_dir})", flush=True)
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(node).parent), os.environ.get("PATH", "")])}
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=node_dir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    if done.returncode != 0 or not node_modules_match_lock(node_dir):
        last = (done.stderr.strip().splitlines() or ["node_modules still does not match package-lock.json"])[-1]
        raise SetupFailed(f"`npm ci` in {node_dir} failed ({last}); fix that, then run {SETUP_COMMAND} again")


def setup(*, chromium: Path = CHROMIUM, node_dir: Path = NODE_DIR, dry_run: bool = False) -> list[str]:
    """Bring the machine to what the suite needs; returns the lines to print (or, dry, what would be done)."""
    packages = apt_packages_needed(chromium)
    npm_needed = not node_modules_match_lock(node_dir)
    if dry_run:
        plan = [f"would install Debian's {' '.join(packages)}"] if packages else []
        if npm_needed:
            plan.append(f"would run npm ci in {node_dir}")
        return plan or ["nothing to install"]
    if packages:
        apt_install(packages)
    if not (chromium.is_file() and os.access(chromium, os.X_OK)):
        raise SetupFailed(f"{chromium} is still missing after installing Debian's chromium; run `apt-get install -y chromium`")
    node = find_node()
    if node is None:
        raise SetupFailed(f"no Node.js {NODE_MINIMUM}+ on PATH even after installing Debian's nodejs; put /usr/bin first on PATH")
    npm = find_npm(node)
    if npm is None:
        raise SetupFailed("npm is missing even after installing Debian's npm; run `apt-get install -y npm`")
    if npm_needed:
        npm_ci(npm, node, node_dir)
    version = ".".join(map(str, node_version(node) or ()))
    return [
        f"chromium: {chromium}",
        f"node: {node} (v{version}), npm: {npm}",
        f"npm packages: {node_dir / 'node_modules'} matches package-lock.json",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="only print what would be installed")
    parser.add_argument("--chromium", type=Path, default=CHROMIUM, help=f"the browser test's Chromium (default {CHROMIUM})")
    args = parser.parse_args(argv)
    try:
        lines = setup(chromium=args.chromium, dry_run=args.dry_run)
    except SetupFailed as exc:
        print(f"setup: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(f"setup: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
