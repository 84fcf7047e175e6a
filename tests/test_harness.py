"""The test harness itself: CI cannot pass by skipping the tests that need Xvfb or Slurm."""

from __future__ import annotations

import pytest

from conftest import require_system_part


def test_a_missing_system_part_skips_on_a_users_machine_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="^Xvfb is not installed$"):
        require_system_part("Xvfb is not installed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true, yet Xvfb is not installed: `make test` must install it"):
        require_system_part("Xvfb is not installed")
    require_system_part(None)  # the part is there: the test runs, under CI or not
