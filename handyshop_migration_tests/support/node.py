"""The Node.js client of the tests (support/node/): find node and its npm packages, run the writer, read its record.

setup_machine.py installs Node.js and the packages; when they are missing a test fails with one line saying to
run it. The writer takes its settings from its environment, as an application does; nothing else of ours is
passed to the child (its PATH only), and the secrets a crypto call needs go through stdin, not argv or env.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from handyshop_migration.tenancy.secrets import Secret
from handyshop_migration_tests.setup_machine import (
    NODE_DIR,
    NODE_MINIMUM,
    SETUP_COMMAND,
    find_node,
    node_modules_match_lock,
)

WRITER = NODE_DIR / "writer.mjs"
CRYPTO = NODE_DIR / "crypto.mjs"


def node_binary() -> str:
    """Node.js 18+ with the client's npm packages installed, or the test fails with one line saying what to run."""
    node = find_node()
    if node is None:
        pytest.fail(f"no Node.js {NODE_MINIMUM}+ on PATH: run `{SETUP_COMMAND}` (it installs Debian's nodejs npm)", pytrace=False)
    if not node_modules_match_lock():
        pytest.fail(
            f"the Node.js client's npm packages are not installed in {NODE_DIR / 'node_modules'}: run `{SETUP_COMMAND}`",
            pytrace=False,
        )
    return node


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(extra or {})}


def run_module(source: str, payload: Any, *, timeout: float = 60) -> Any:
    """Run ES-module `source` in node with `payload` as JSON on stdin; its stdout is parsed as JSON.

    `source` may import "crypto.mjs" and "pg" (resolved from support/node/) and reads its input with
    `JSON.parse(readFileSync(0, 'utf8'))`.
    """
    node = node_binary()
    done = subprocess.run(
        [node, "--input-type=module", "-e", source],
        input=json.dumps(payload), capture_output=True, text=True, cwd=NODE_DIR, env=_child_env(), timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(f"node exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


@dataclass
class WriterRecord:
    """What the writer appended to OUT, by kind; `writes` only ever lists committed INSERTs."""

    writes: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    gave_up: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> WriterRecord:
        record = cls()
        if not path.exists():
            return record
        lines = path.read_text().split("\n")
        for line in lines[:-1]:  # the part after the last newline is a line still being written
            entry = json.loads(line)
            {"write": record.writes, "refused": record.refused, "error": record.errors, "gave_up": record.gave_up}[
                entry["kind"]
            ].append(entry)
        return record


@dataclass
class WriterResult:
    record: WriterRecord
    summary: dict[str, Any]
    returncode: int
    stderr: str


class NodeWriter:
    """One writer process: `records()` while it runs, `stop()` to end it and get its result."""

    def __init__(
        self,
        *,
        control_url: Secret,
        key: Secret,
        shops: list[int],
        workdir: Path,
        pause_ms: int = 2,
        max_attempts: int = 50,
        duration_ms: int | None = None,
        max_writes: int | None = None,
    ) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.out = workdir / f"writer-{self.run_id}.jsonl"
        self.stop_file = workdir / f"writer-{self.run_id}.stop"
        env = {
            "CONTROL_URL": control_url.reveal(),
            "TENANT_ENCRYPTION_KEY": key.reveal(),
            "SHOPS": ",".join(map(str, shops)),
            "OUT": str(self.out),
            "STOP_FILE": str(self.stop_file),
            "RUN_ID": self.run_id,
            "PAUSE_MS": str(pause_ms),
            "MAX_ATTEMPTS": str(max_attempts),
        }
        if duration_ms is not None:
            env["DURATION_MS"] = str(duration_ms)
        if max_writes is not None:
            env["MAX_WRITES"] = str(max_writes)
        self._stderr = workdir / f"writer-{self.run_id}.stderr"
        with self._stderr.open("w") as err:
            self.process = subprocess.Popen(
                [node_binary(), str(WRITER)], cwd=NODE_DIR, env=_child_env(env),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True,
            )

    @property
    def marker_prefix(self) -> str:
        """Every last_name this writer inserts starts with it."""
        return f"node-{self.run_id}-"

    def records(self) -> WriterRecord:
        return WriterRecord.read(self.out)

    def wait_for(self, what: str, predicate: Callable[[WriterRecord], bool], timeout: float = 60) -> WriterRecord:
        """Poll OUT until `predicate` holds; fail naming `what` (and the writer's stderr) if it does not."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.records()
            if predicate(record):
                return record
            if self.process.poll() is not None:
                raise AssertionError(f"the writer exited {self.process.returncode} before {what}: {self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:.0f} s; writer stderr: {self.stderr()}")
            time.sleep(0.05)

    def stderr(self) -> str:
        return self._stderr.read_text()[-4000:] if self._stderr.exists() else ""

    def stop(self, timeout: float = 60) -> WriterResult:
        self.stop_file.touch()
        try:
            stdout, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, _ = self.process.communicate()
            raise AssertionError(f"the writer did not stop within {timeout:.0f} s; stderr: {self.stderr()}") from None
        last = (stdout.strip().splitlines() or ["{}"])[-1]
        return WriterResult(self.records(), json.loads(last), self.process.returncode, self.stderr())


@contextmanager
def node_writer(**kwargs: Any) -> Iterator[NodeWriter]:
    """A running NodeWriter, killed if the block fails before stopping it."""
    writer = NodeWriter(**kwargs)
    try:
        yield writer
    finally:
        if writer.process.poll() is None:
            writer.process.kill()
            writer.process.communicate()
