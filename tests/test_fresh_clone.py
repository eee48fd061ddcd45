"""A user's clone has no ``../shared`` beside it: the sample tests skip there, and fail under CI.

Runs pytest in a subprocess inside a ``git clone`` of this repository placed in a temporary folder (so no
``shared/`` sits beside it), on the test files that read the real samples.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_TESTS = ["tests/jobs/test_readers.py", "tests/model/test_baselines.py"]


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("this test clones the repository: it needs git and a git checkout")
    clone = tmp_path_factory.mktemp("user") / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    # The working tree's test files, so uncommitted changes to them are what is checked.
    for name in ["tests/conftest.py", *SAMPLE_TESTS]:
        shutil.copyfile(ROOT / name, clone / name)
    assert not (clone.parent.parent / "shared").exists()
    return clone


def run_sample_tests(clone: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SESSIONREC_SHARED_DATA")}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q", *SAMPLE_TESTS],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600)


def test_sample_tests_skip_with_the_reason_in_a_users_clone(fresh_clone: Path) -> None:
    result = run_sample_tests(fresh_clone, ci=False)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert "skipped" in summary and "failed" not in summary and "error" not in summary, summary
    assert "real clickstream samples not found" in result.stdout
    assert str(fresh_clone.parent / "shared" / "data") in result.stdout


def test_sample_tests_fail_under_ci_without_the_samples(fresh_clone: Path) -> None:
    result = run_sample_tests(fresh_clone, ci=True)
    assert result.returncode != 0
    assert "CI must have them" in result.stdout
    assert "skipped" not in result.stdout.strip().splitlines()[-1]
