#!/usr/bin/env python3
"""Generate deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/rules.yaml.

The Prometheus Operator's PrometheusRule carries a rule file's ``groups`` under ``spec``, so
the CRD is rules.yaml's text (comments and block scalars kept) indented under ``spec:``,
behind a fixed header. rules.yaml is the one source; never edit the generated file.

    python deploy/gen_prometheusrule.py          # rewrite the generated file
    python deploy/gen_prometheusrule.py --check  # exit 1 if it is out of date

Standard library only, so it runs anywhere Python does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
RULES = DEPLOY / "prometheus" / "rules.yaml"
TARGET = DEPLOY / "kubernetes" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/rules.yaml by deploy/gen_prometheusrule.py: do not edit.
# Change rules.yaml, then run `python deploy/gen_prometheusrule.py`.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: registry-watcher
  labels:
    app.kubernetes.io/name: registry-watcher
    app.kubernetes.io/component: monitoring
    # Prometheus selects PrometheusRules by its ruleSelector: with kube-prometheus-stack add
    # `release: <its release name>` here (or in a kustomize overlay).
spec:
"""


def _body(rules_text: str) -> list[str]:
    """rules.yaml without its leading comment block (it speaks of itself, not of the CRD)."""
    lines = rules_text.splitlines()
    start = 0
    while start < len(lines) and (not lines[start].strip() or lines[start].startswith("#")):
        start += 1
    return lines[start:]


def render(rules_text: str) -> str:
    """The PrometheusRule manifest for a rules file's text."""
    indented = [f"  {line}" if line.strip() else "" for line in _body(rules_text)]
    return HEADER + "\n".join(indented).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args(argv)
    expected = render(RULES.read_text(encoding="utf-8"))
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != expected:
            print(
                f"{TARGET.relative_to(DEPLOY.parent)} is out of date: "
                "run python deploy/gen_prometheusrule.py",
                file=sys.stderr,
            )
            return 1
        return 0
    TARGET.write_text(expected, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(DEPLOY.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
