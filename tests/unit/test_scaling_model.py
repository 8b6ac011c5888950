"""docs/scaling.md's capacity model against deploy/k8s: with each Deployment's CPU request and its
HPA's utilization target, the HPA's maxReplicas must reach the pods the model says the service
needs (busy cores / (request x target)), and the table's maxReplicas column must be the manifests'.
Static: reads the files only."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_deploy import K8s, load_k8s

DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"
HEADER = "| service | busy cores (measured) | pods (measured) | pods (quiet estimate) | `maxReplicas` in deploy/k8s |"


def model_rows(text: str) -> dict[str, list[str]]:
    """service -> its cells in the model's table (the one under HEADER)."""
    lines = text.splitlines()
    start = lines.index(HEADER) + 2  # skip the separator
    rows: dict[str, list[str]] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def first_number(cell: str) -> float | None:
    m = re.match(r"~?(\d+(?:\.\d+)?)", cell)
    return float(m.group(1)) if m else None


def needed_pods(busy_cores: float, request_cores: float, target_percent: int) -> int:
    """The pods an HPA holding each at ``target_percent`` of ``request_cores`` needs for the work."""
    return math.ceil(round(busy_cores / (request_cores * target_percent / 100), 6))


def sizing(k8s: K8s, service: str) -> tuple[float, int, int]:
    """(CPU request in cores, HPA utilization target, maxReplicas) of a service in the manifests."""
    dep: Any = k8s.one("Deployment", service)
    hpa: Any = k8s.one("HorizontalPodAutoscaler", service)
    request = cpu_cores(dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"])
    target = next(m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"])
    return request, int(target), int(hpa["spec"]["maxReplicas"])


def problems(k8s: K8s, rows: dict[str, list[str]]) -> list[str]:
    out = []
    for service, (cores, pods, _quiet, documented_max) in rows.items():
        request, target, max_replicas = sizing(k8s, service)
        if documented_max != str(max_replicas):
            out.append(f"{service}: docs/scaling.md says maxReplicas {documented_max}, deploy/k8s has {max_replicas}")
        busy = first_number(cores)
        if busy is None:
            continue  # sized from its own rate (the text says how)
        needed = needed_pods(busy, request, target)
        if first_number(pods) != needed:
            out.append(
                f"{service}: {busy} busy cores at {target} % of {request} CPU need {needed} pods, the table says {pods}"
            )
        if max_replicas < needed:
            out.append(f"{service}: maxReplicas {max_replicas} cannot reach the {needed} pods the model needs")
    return out


def test_every_service_is_in_the_model() -> None:
    assert set(model_rows(DOC.read_text(encoding="utf-8"))) == {"gateway", "authz", "token", "account"}


def test_the_hpas_reach_the_models_pod_counts() -> None:
    assert problems(load_k8s(), model_rows(DOC.read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda k: k.one("HorizontalPodAutoscaler", "token")["spec"].update(maxReplicas=10), "cannot reach"),
        (
            lambda k: k.one("Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]["resources"][
                "requests"
            ].update(cpu="200m"),
            "need 365 pods",
        ),
        (lambda k: k.one("HorizontalPodAutoscaler", "account")["spec"].update(maxReplicas=5), "docs/scaling.md says"),
    ],
)
def test_the_check_catches(change: Any, expected: str) -> None:
    k8s = load_k8s()
    change(k8s)
    found = problems(k8s, model_rows(DOC.read_text(encoding="utf-8")))
    assert any(expected in p for p in found), found


def test_the_arithmetic() -> None:
    assert cpu_cores("200m") == 0.2 and cpu_cores("1") == 1.0 and cpu_cores(2) == 2.0
    assert needed_pods(51, 1.0, 70) == 73 and needed_pods(69, 1.0, 70) == 99 and needed_pods(4.1, 1.0, 70) == 6
    assert needed_pods(0.7, 1.0, 70) == 1  # exactly at target: no rounding up past it
