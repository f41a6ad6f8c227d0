"""Deployment files: deploy/ (Prometheus rules, Grafana dashboard, Kubernetes, compose), Dockerfile and debian/.

What can be checked without Prometheus, Docker or Kubernetes is: promtool on the rules, metric names the rules
and the dashboard use against a live /metrics, probe paths and ports against the admin server's routes and the
config defaults, the Dockerfile's packages and build commands against scripts/install-deps.sh and README.md,
and the packaged files against what `meson install` installs.
"""
import shutil
import subprocess

import pytest

import pgr

REPO = pgr.REPO
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "pgrouter-rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "pgrouter-rules.test.yml"


def promtool():
    path = shutil.which("promtool")
    assert path, "promtool is missing: scripts/install-deps.sh installs Debian's prometheus package"
    return path


def test_prometheus_rules_check():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rules_unit_tests():
    # Every alert has input series that fire it and series that must not (pgrouter-rules.test.yml).
    result = subprocess.run([promtool(), "test", "rules", str(RULES_TEST)], capture_output=True, text=True,
                            timeout=30, cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
