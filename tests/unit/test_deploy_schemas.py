"""deploy/ against the real schemas: every Kubernetes manifest against the Kubernetes API's OpenAPI
schemas of the version we target (strict: an unknown or misspelt field is an error), and both
Compose files against the Compose Specification's JSON schema. tests/unit/test_deploy.py checks
that the same files agree with the code; this checks that Kubernetes and Compose would accept them.

The schemas come with dev dependencies, so no network is needed: `kubernetes-validate` bundles the
Kubernetes schemas per version, and `check-jsonschema` vendors the Compose Specification schema
(compose-spec/compose-spec, Apache-2.0; licence in check_jsonschema/builtin_schemas/vendor/licenses).
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE_FILES = [ROOT / "deploy" / "compose.yaml", ROOT / "deploy" / "compose.deps.yaml"]
# The Kubernetes release the manifests target (README, "First run: Kubernetes"): raise it on purpose.
K8S_VERSION = "1.34.0"
# Not an API object: kustomize's own config (tests/unit/test_deploy.py checks its resource list).
NOT_API_OBJECTS = {"kustomization.yaml"}
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name not in NOT_API_OBJECTS)


def k8s_problems(doc: dict[str, Any], where: str) -> list[str]:
    """Empty when the API server's schema for this kind and apiVersion accepts the object."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "(top)"
        return [f"{where}: {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:  # a kind/apiVersion Kubernetes does not serve
        return [f"{where}: {exc.message}"]
    return []


def manifest_problems(path: Path) -> list[str]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    if not docs:
        return [f"{path.name}: no objects"]
    return [p for i, d in enumerate(docs) for p in k8s_problems(d, f"{path.name}[{i}] {d.get('kind')}")]


def compose_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))
    return schema


def compose_problems(doc: Any, where: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [
        f"{where}: {'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def load_compose(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))  # anchors and `<<:` merges resolved, as Compose does


def test_the_pinned_kubernetes_version_is_bundled() -> None:
    assert kubernetes_validate.utils.major_minor(K8S_VERSION) in {
        kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()
    }


def test_every_manifest_is_checked() -> None:
    assert {p.name for p in MANIFESTS} >= {"namespace.yaml", "configmap.yaml", "gateway.yaml", "ingress.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    assert manifest_problems(path) == []


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_matches_the_compose_spec(path: Path) -> None:
    assert compose_problems(load_compose(path), path.name) == []


def _deployment(tmp: Path) -> tuple[Path, dict[str, Any]]:
    doc = next(d for d in yaml.safe_load_all((K8S / "gateway.yaml").read_text()) if d and d["kind"] == "Deployment")
    return tmp / "gateway.yaml", doc


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    return container


K8S_BREAKAGES = {
    "a misspelt field": (lambda d: d["spec"].update(replica=2), "replica"),
    "a port that is not a number": (lambda d: _container(d)["ports"][0].update(containerPort="http"), "containerPort"),
    "a probe without a handler type": (lambda d: _container(d).update(livenessProbe={"httpGet": {}}), "port"),
    "a kind the apiVersion does not serve": (lambda d: d.update(apiVersion="extensions/v1beta1"), "extensions"),
    "a missing selector": (lambda d: d["spec"].pop("selector"), "selector"),
}


@pytest.mark.parametrize("case", K8S_BREAKAGES)
def test_a_broken_manifest_is_caught(case: str, tmp_path: Path) -> None:
    path, doc = _deployment(tmp_path)
    break_it, expected = K8S_BREAKAGES[case]
    assert manifest_problems_of(path, doc) == []  # the copy is fine before it is broken
    broken = copy.deepcopy(doc)
    break_it(broken)
    problems = manifest_problems_of(path, broken)
    assert problems and expected in " ".join(problems), problems


def manifest_problems_of(path: Path, doc: dict[str, Any]) -> list[str]:
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return manifest_problems(path)


COMPOSE_BREAKAGES = {
    "a misspelt service key": (lambda d: d["services"]["gateway"].update(port=["8080:8080"]), "port"),
    "ports not a list": (lambda d: d["services"]["gateway"].update(ports="8080:8080"), "ports"),
    "an unknown depends_on condition": (
        lambda d: d["services"]["authz"]["depends_on"]["postgres"].update(condition="service_ready"),
        "service_ready",
    ),
    "a healthcheck test that is a number": (lambda d: d["services"]["redis"]["healthcheck"].update(test=1), "test"),
    "an unknown top-level key": (lambda d: d.update(service={}), "service"),
}


@pytest.mark.parametrize("case", COMPOSE_BREAKAGES)
def test_a_broken_compose_file_is_caught(case: str) -> None:
    doc = load_compose(COMPOSE_FILES[0])
    break_it, expected = COMPOSE_BREAKAGES[case]
    break_it(doc)
    problems = compose_problems(doc, "compose.yaml")
    assert problems and expected in " ".join(problems), problems


def test_a_broken_compose_file_on_disk_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text((COMPOSE_FILES[1]).read_text().replace("    ports:\n", "    portz:\n", 1), encoding="utf-8")
    problems = compose_problems(load_compose(broken), broken.name)
    assert problems and "portz" in " ".join(problems), problems
