"""The deployment files in deploy/ checked against the code, statically (no Docker, no cluster).

Expectations are derived from the code, not written down twice: the service list
(``libs.platform.config.SERVICES``), the ports, setting names, secret and loopback-default fields
(``Settings``), the probe paths (the routes of each built app), the gateway's upstreams
(``Settings.upstream_url``) and public paths (``services.gateway.routes.ROUTES``), the packaging
(pyproject.toml) and the runnable commands (importable ``__main__`` modules, oauthctl's parser).

Each check is a plain function returning a list of problems, so the tests can show both that the
real files have none and that a broken copy is reported.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib
import importlib.util
import json
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pydantic
import pytest
import yaml
from aiohttp import web

from libs.platform.config import SERVICES, Settings
from libs.platform.web import create_admin_app
from oauthctl import components
from services.gateway.routes import ROUTES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
KUSTOMIZATION = K8S / "kustomization.yaml"
SECRET_TEMPLATE = K8S / "secret.template.yaml"

FIELDS = Settings.model_fields
# Secrets are the fields declared with repr=False (kept out of logs and reprs).
SECRET_FIELDS = frozenset(name for name, f in FIELDS.items() if f.repr is False)
# demo_password only seeds the local demo data (`make run`, `oauthctl demo`); a deployment has none.
LOCAL_ONLY_FIELDS = frozenset({"demo_password"})
REQUIRED_SECRETS = SECRET_FIELDS - LOCAL_ONLY_FIELDS
# Defaults that point at the loopback are wrong inside a container: a deployment must set them.
LOOPBACK_FIELDS = frozenset(
    name for name, f in FIELDS.items() if isinstance(f.default, str) and "127.0.0.1" in f.default
)
# The gateway reaches the services that have an upstream URL setting; what has none is public.
UPSTREAMS = tuple(s for s in SERVICES if f"{s}_url" in FIELDS)
PUBLIC = tuple(s for s in SERVICES if s not in UPSTREAMS)
# Environment of the third-party images (postgres, rabbitmq) in compose.
INFRA_ENV_PREFIXES = ("POSTGRES_", "RABBITMQ_")
# Served by every app but never to the internet.
NOT_PUBLIC_PATHS = ("/internal", "/internal/anything", "/metrics", "/healthz", "/readyz")
LIVENESS, READINESS = "/healthz", "/readyz"
MIGRATE_COMMAND = ["oauthctl", "migrate"]
PURGE_COMMAND = ["oauthctl", "purge"]  # docs/operations.md "Retention": an hourly CronJob runs it
# Stand-in for a secret the operator supplies (.env for compose, the Secret in k8s).
SAMPLE_SECRET = "sample-secret-value-" + "x" * 40

Problems = list[str]


# --- shared helpers --------------------------------------------------------------------------------
def env_name_ok(name: str) -> bool:
    return name.lower() in FIELDS


def settings_from_env(env: dict[str, str]) -> Settings:
    """The Settings a process with exactly ``env`` would read (nothing from the test's environment)."""
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings()  # type: ignore[call-arg]


@cache
def _build(service: str, settings_json: str) -> web.Application:
    settings = Settings.model_validate_json(settings_json)
    module = importlib.import_module(f"services.{service}.app")
    return module.build(settings)


def build_app(service: str, settings: Settings) -> web.Application:
    """``services.<name>.app.build(settings)``: builds the router, connects nowhere."""
    return _build(service, settings.model_dump_json())


def get_routes(app: web.Application) -> set[str]:
    return {
        res.canonical
        for res in app.router.resources()
        if isinstance(res, web.PlainResource)
        for route in res
        if route.method in ("GET", "*")
    }


def probe_port(settings: Settings, service: str) -> int:
    """Where probes go: the admin port of a public service, else the service's own port."""
    return settings.admin_port_of(service) or settings.port_of(service)


def probe_routes(service: str, settings: Settings, app: web.Application) -> set[str]:
    """GET routes on the probe port: the admin app's (libs/platform/web.py), or the app's own."""
    return get_routes(create_admin_app(app) if settings.admin_port_of(service) else app)


def try_build(service: str, env: dict[str, str], where: str) -> tuple[Settings | None, set[str], Problems]:
    """Settings and the GET routes on the probe port of ``service`` run with ``env``, or why it would
    not start."""
    try:
        settings = settings_from_env(env)
    except pydantic.ValidationError as exc:
        return None, set(), [f"{where}: its environment is not valid Settings: {exc}"]
    try:
        app = build_app(service, settings)
    except Exception as exc:  # the service would crash at start the same way
        return settings, set(), [f"{where}: services.{service}.app.build() fails with this environment: {exc!r}"]
    return settings, probe_routes(service, settings, app), []


def url_password_problem(value: str) -> str | None:
    """A URL with a password must take it from a ${VAR} reference, never a literal."""
    m = re.match(r"^[a-z][a-z0-9+.-]*://(?P<userinfo>[^/@]*)@", value)
    if not m or ":" not in m["userinfo"]:
        return None
    password = m["userinfo"].split(":", 1)[1]
    if password and not re.fullmatch(r"\$\{[^}]+\}", password):
        return "a URL with a literal password"
    return None


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?:[:]?[?-][^}]*)?\}", value) is not None


def path_covers(rule_path: str, path_type: str, path: str) -> bool:
    """Whether an Ingress rule (Exact or Prefix, element-wise like Kubernetes) routes ``path``."""
    if path_type == "Exact":
        return path == rule_path
    prefix = rule_path.rstrip("/")
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


# --- the Dockerfile ----------------------------------------------------------------------------------
@dataclass
class Image:
    stages: list[str] = field(default_factory=list)  # FROM lines
    user: str | None = None  # USER of the last stage
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)  # ENV of the last stage
    copies: list[str] = field(default_factory=list)  # COPY sources from the build context
    runs: list[str] = field(default_factory=list)

    @property
    def uid(self) -> int | None:
        user = (self.user or "").split(":")[0]
        return int(user) if user.isdigit() else None


def parse_dockerfile(text: str) -> Image:
    image = Image()
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    for line in logical:
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        rest = rest.strip()
        if instr == "FROM":
            image.stages.append(rest)
            image.user, image.env = None, {}
        elif instr == "USER":
            image.user = rest
        elif instr == "ENTRYPOINT":
            image.entrypoint = json.loads(rest)
        elif instr == "CMD":
            image.cmd = json.loads(rest)
        elif instr == "ENV":
            parts = shlex.split(rest)
            if parts and "=" not in parts[0]:
                image.env[parts[0]] = " ".join(parts[1:])
            else:
                image.env.update({k: v for k, _, v in (p.partition("=") for p in parts)})
        elif instr == "COPY":
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            if not any(a.startswith("--from") for a in shlex.split(rest)):
                image.copies.extend(args[:-1])
        elif instr == "RUN":
            image.runs.append(rest)
    return image


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes; a match on a parent counts."""
    excluded = False
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        if any(fnmatch.fnmatch(c, pat) or fnmatch.fnmatch(c, pat.replace("**/", "")) for c in candidates):
            excluded = not negate
    return excluded


def packaged_top_levels(pyproject: dict[str, Any]) -> list[str]:
    return pyproject["tool"]["setuptools"]["packages"]["find"]["include"]


def module_is_packaged(module: str, pyproject: dict[str, Any]) -> bool:
    return any(fnmatch.fnmatch(module, pat) for pat in packaged_top_levels(pyproject))


def command_problems(cmd: list[str], pyproject: dict[str, Any]) -> Problems:
    """Whether ``python -m <cmd>`` runs in the image: an installed module with a __main__, and
    arguments its parser accepts."""
    if not cmd:
        return ["an empty command"]
    module, args = cmd[0], cmd[1:]
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return [f"`python -m {' '.join(cmd)}`: no module {module!r}"]
    main = module
    if spec.submodule_search_locations is not None:  # a package runs its __main__
        main = f"{module}.__main__"
        if importlib.util.find_spec(main) is None:
            return [f"`python -m {' '.join(cmd)}`: package {module!r} has no __main__"]
    if not module_is_packaged(module, pyproject):
        return [f"`python -m {' '.join(cmd)}`: {module!r} is not in pyproject's packages, so not in the image"]
    if args:
        parser_factory = getattr(importlib.import_module(main), "build_parser", None)
        if parser_factory is None:
            return [f"`python -m {' '.join(cmd)}`: arguments given but {main} has no build_parser() to take them"]
        try:
            parser_factory().parse_args(args)
        except SystemExit:
            return [f"`python -m {' '.join(cmd)}`: {main} rejects the arguments {args}"]
    return []


def check_dockerfile(
    image: Image, commands: Iterable[list[str]], pyproject: dict[str, Any], ignore: list[str]
) -> Problems:
    p: Problems = []
    if len(image.stages) < 2:
        p.append(f"Dockerfile: expected a multi-stage build, found {len(image.stages)} FROM")
    if image.uid is None or image.uid == 0:
        p.append(f"Dockerfile: the final stage must switch to a numeric non-root USER, found {image.user!r}")
    if image.entrypoint != ["python", "-m"]:
        p.append(f'Dockerfile: ENTRYPOINT must be ["python", "-m"], found {image.entrypoint}')
    expected_env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "BIND_HOST": "0.0.0.0"}
    for key, value in expected_env.items():
        if image.env.get(key) != value:
            p.append(f"Dockerfile: the final stage must set ENV {key}={value}, found {image.env.get(key)!r}")
    for run in image.runs:
        if re.search(r"pip\s+install\b.*(\s-e\s|--editable)", run):
            p.append(f"Dockerfile: editable install ({run!r}); the runtime image has no source tree")
    for key in image.env:
        if key.lower() in FIELDS and key != "BIND_HOST":
            if key.lower() in SECRET_FIELDS:
                p.append(f"Dockerfile: secret {key} baked into the image")
    for cmd in [image.cmd or [], *commands]:
        p.extend(command_problems(cmd, pyproject))
    for src in image.copies:
        if dockerignore_excludes(ignore, src):
            p.append(f"Dockerfile: COPY {src} but {DOCKERIGNORE.name} leaves it out of the build context")
        top = PurePosixPath(src).parts[0]
        if (ROOT / top).is_dir() and not module_is_packaged(top, pyproject):
            p.append(f"Dockerfile: copies {src}, which pyproject does not package")
    for top in packaged_top_levels(pyproject):
        name = top.rstrip("*")
        if (ROOT / name).is_dir() and not any(PurePosixPath(c).parts[0] == name for c in image.copies):
            p.append(f"Dockerfile: pyproject packages {name}/ but the Dockerfile does not copy it")
    for secret in (".env", ".git", ".venv"):
        if not dockerignore_excludes(ignore, secret):
            p.append(f"{DOCKERIGNORE.name}: {secret} would be sent to the builder")
    return p


def check_packaging(pyproject: dict[str, Any]) -> Problems:
    """The image installs the project non-editable, so every data file the code reads from next to
    itself (migrations, templates, static files) must be package data, and the migration folders
    must sit in packaged trees (components.ROOT is site-packages there)."""
    p: Problems = []
    patterns = [pat for pats in pyproject["tool"]["setuptools"]["package-data"].values() for pat in pats]
    for component, folder in components.MIGRATIONS:
        rel = folder.relative_to(components.ROOT)
        if not module_is_packaged(rel.parts[0], pyproject):
            p.append(f"pyproject: migrations of {component} ({rel}) are outside the packaged trees")
    for top in packaged_top_levels(pyproject):
        base = ROOT / top.rstrip("*")
        if not base.is_dir():
            continue
        for path in base.rglob("*"):
            rel = path.relative_to(ROOT)
            if not path.is_file() or "__pycache__" in rel.parts or path.suffix in (".py", ".pyc", ".md"):
                continue
            if path.name.startswith("."):
                continue
            if not ({"migrations", "templates", "static"} & set(rel.parts[:-1])):
                continue
            parts = rel.parts
            covered = any(
                len(parts[i:]) == len(PurePosixPath(pat).parts)
                and all(fnmatch.fnmatch(a, b) for a, b in zip(parts[i:], PurePosixPath(pat).parts, strict=True))
                for i in range(1, len(parts))
                for pat in patterns
            )
            if not covered:
                p.append(f"pyproject: {rel} is not package data, so the image would not have it")
    return p


# --- compose ---------------------------------------------------------------------------------------
_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error}, as if the operator set every required
    variable to a sample secret and nothing else."""

    def repl(m: re.Match[str]) -> str:
        op = m["op"] or ""
        return m["arg"] if op.endswith("-") else SAMPLE_SECRET

    return _REF.sub(repl, value.replace("$$", "\0")).replace("\0", "$")


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def compose_command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def is_app_service(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if not isinstance(build, dict):
        return False
    context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    return (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE.resolve()


def healthcheck_target(service: dict[str, Any]) -> tuple[int, str] | None:
    test = service.get("healthcheck", {}).get("test")
    text = " ".join(test) if isinstance(test, list) else str(test or "")
    m = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\" ]*)", text)
    return (int(m[1]), m[2]) if m else None


def published_container_ports(service: dict[str, Any]) -> list[int]:
    ports = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.append(int(entry["target"]))
        else:
            ports.append(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def check_compose(doc: dict[str, Any]) -> Problems:
    p: Problems = []
    services: dict[str, dict[str, Any]] = doc.get("services") or {}
    apps = {name: s for name, s in services.items() if is_app_service(s)}
    by_command = {tuple(compose_command(s)): name for name, s in apps.items()}
    migrators = [name for name, s in apps.items() if compose_command(s) == MIGRATE_COMMAND]
    if not migrators:
        p.append(f"compose: no service runs {' '.join(MIGRATE_COMMAND)}")
    settings_of: dict[str, Settings] = {}

    for name in SERVICES:
        where = f"compose service {name!r}"
        service = apps.get(name)
        if service is None:
            p.append(f"{where}: missing (every service in libs.platform.config.SERVICES runs in compose)")
            continue
        if compose_command(service) != [f"services.{name}"]:
            p.append(f"{where}: command must be ['services.{name}'], found {compose_command(service)}")
        for dep in migrators:
            cond = (service.get("depends_on") or {}).get(dep, {})
            if not isinstance(cond, dict) or cond.get("condition") != "service_completed_successfully":
                p.append(f"{where}: must depend on {dep!r} with condition service_completed_successfully")
        settings, routes, errors = try_build(name, {k: interpolate(v) for k, v in compose_env(service).items()}, where)
        p.extend(errors)
        if settings is None:
            continue
        settings_of[name] = settings
        port = settings.port_of(name)
        probes_on = probe_port(settings, name)
        target = healthcheck_target(service)
        if target is None:
            p.append(f"{where}: needs a healthcheck that GETs http://127.0.0.1:{probes_on}{LIVENESS}")
        else:
            if target[0] != probes_on:
                p.append(f"{where}: healthcheck probes port {target[0]}, but {name} serves probes on {probes_on}")
            if routes and target[1] not in routes:
                p.append(f"{where}: healthcheck path {target[1]} is not a GET route of services.{name}")
        published = published_container_ports(service)
        if name in PUBLIC and published != [port]:
            p.append(f"{where}: must publish its port {port} (and only it), found {published}")

    for name, service in services.items():
        where = f"compose service {name!r}"
        env = compose_env(service)
        if name not in PUBLIC and service.get("ports"):
            p.append(f"{where}: publishes {service['ports']}, but only {', '.join(PUBLIC)} may be reachable")
        for key, raw in env.items():
            if name in apps and not env_name_ok(key):
                p.append(f"{where}: {key} is not a Settings field (no {key.lower()!r} in libs/platform/config.py)")
            if name not in apps and not key.startswith(INFRA_ENV_PREFIXES):
                p.append(f"{where}: {key} is not a documented variable of its image ({INFRA_ENV_PREFIXES})")
            secret_like = key.lower() in SECRET_FIELDS if name in apps else re.search(r"PASS|SECRET", key)
            if secret_like and not is_reference(raw):
                p.append(f"{where}: {key} must be a ${{...}} reference to the operator's .env, not a value")
            if (issue := url_password_problem(raw)) is not None:
                p.append(f"{where}: {key} is {issue}; use ${{...}}")
        if name in apps:
            for field_name in sorted(REQUIRED_SECRETS):
                if field_name.upper() not in env:
                    p.append(f"{where}: the secret {field_name.upper()} is not provided")
            for field_name in sorted(LOOPBACK_FIELDS):
                value = env.get(field_name.upper())
                if value is None or "127.0.0.1" in value or "localhost" in value:
                    p.append(f"{where}: {field_name.upper()} must be set (its default is the loopback), got {value!r}")

    for public in PUBLIC:
        public_settings = settings_of.get(public)
        if public_settings is None:
            continue
        for upstream in UPSTREAMS:
            url = urlsplit(public_settings.upstream_url(upstream))
            runs_as = by_command.get((f"services.{upstream}",))
            up_settings = settings_of.get(upstream)
            if runs_as is None or up_settings is None:
                continue
            if url.hostname != runs_as or url.port != up_settings.port_of(upstream):
                p.append(
                    f"compose service {public!r}: {upstream.upper()}_URL is {public_settings.upstream_url(upstream)}, "
                    f"but {upstream} runs as compose service {runs_as!r} on port {up_settings.port_of(upstream)}"
                )
    return p


# --- kubernetes ------------------------------------------------------------------------------------
@dataclass
class K8s:
    docs: list[dict[str, Any]]  # what kustomization.yaml applies
    secret_template: dict[str, Any]
    namespace: str | None = None  # kustomization's namespace

    def find(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]

    def one(self, kind: str, name: str) -> dict[str, Any] | None:
        found = self.find(kind, name)
        return found[0] if len(found) == 1 else None


def pod_env(k8s: K8s, container: dict[str, Any]) -> tuple[dict[str, str], Problems]:
    """The container's environment, with every Secret key filled by a sample value."""
    env: dict[str, str] = {}
    p: Problems = []
    secret_name = k8s.secret_template.get("metadata", {}).get("name")
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            ref = source["configMapRef"]["name"]
            cm = k8s.one("ConfigMap", ref)
            if cm is None:
                p.append(f"envFrom ConfigMap {ref!r} is not in the manifests")
            else:
                env.update({k: str(v) for k, v in (cm.get("data") or {}).items()})
        elif "secretRef" in source:
            ref = source["secretRef"]["name"]
            if ref != secret_name:
                p.append(f"envFrom Secret {ref!r}, but secret.template.yaml describes {secret_name!r}")
            keys = {**(k8s.secret_template.get("stringData") or {}), **(k8s.secret_template.get("data") or {})}
            env.update(dict.fromkeys(keys, SAMPLE_SECRET))
    for item in container.get("env") or []:
        env[item["name"]] = str(item.get("value", SAMPLE_SECRET))
    return env, p


def container_security_problems(
    where: str, pod: dict[str, Any], container: dict[str, Any], uid: int | None
) -> Problems:
    p: Problems = []
    psc = pod.get("securityContext") or {}
    sc = {**psc, **(container.get("securityContext") or {})}
    if sc.get("runAsNonRoot") is not True:
        p.append(f"{where}: securityContext.runAsNonRoot must be true")
    if uid is not None and sc.get("runAsUser") != uid:
        p.append(f"{where}: runAsUser must be the image's USER {uid}, found {sc.get('runAsUser')}")
    if (container.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
        p.append(f"{where}: securityContext.readOnlyRootFilesystem must be true")
    if (container.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False:
        p.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in ((container.get("securityContext") or {}).get("capabilities") or {}).get("drop", []):
        p.append(f"{where}: securityContext.capabilities.drop must contain ALL")
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        for res in ("cpu", "memory"):
            if res not in (resources.get(kind) or {}):
                p.append(f"{where}: resources.{kind}.{res} is missing")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    tmp = [m for m in container.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"]
    if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
        p.append(f"{where}: a read-only root filesystem needs an emptyDir mounted at /tmp")
    for port in container.get("ports") or []:
        if "hostPort" in port:
            p.append(f"{where}: hostPort {port['hostPort']} exposes the pod on the node")
    return p


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def probe_problems(where: str, container: dict[str, Any], port: int, routes: set[str], settings: Settings) -> Problems:
    p: Problems = []
    named = {pt.get("name"): pt.get("containerPort") for pt in container.get("ports") or []}
    for probe, path in (("livenessProbe", LIVENESS), ("readinessProbe", READINESS)):
        get = ((container.get(probe) or {}).get("httpGet")) or None
        if get is None:
            p.append(f"{where}: needs a {probe} GET {path}")
            continue
        if get.get("path") != path:
            p.append(f"{where}: {probe} must GET {path}, found {get.get('path')}")
        target = named.get(get.get("port"), get.get("port"))
        if target != port:
            p.append(
                f"{where}: {probe} targets port {get.get('port')!r} = {target}, but the app serves probes on {port}"
            )
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = (container.get(probe) or {}).get("httpGet")
        if get and routes and get.get("path") not in routes:
            p.append(f"{where}: {probe} path {get.get('path')} is not a GET route of the app")
    return p


def check_k8s(k8s: K8s, image_uid: int | None, routes_table: dict[str, str] = ROUTES) -> Problems:
    p: Problems = []
    namespaces = [d["metadata"]["name"] for d in k8s.find("Namespace")]
    if len(namespaces) != 1:
        p.append(f"k8s: expected one Namespace, found {namespaces}")
    ns = namespaces[0] if namespaces else None
    for doc in k8s.docs:
        if doc.get("kind") != "Namespace" and (doc["metadata"].get("namespace") or k8s.namespace) != ns:
            p.append(f"k8s: {doc['kind']}/{doc['metadata']['name']} is not in namespace {ns!r}")

    # ConfigMap and Secret template: setting names only, no secret values committed.
    for cm in k8s.find("ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            where = f"k8s ConfigMap {cm['metadata']['name']}"
            if not env_name_ok(key):
                p.append(f"{where}: {key} is not a Settings field (no {key.lower()!r} in libs/platform/config.py)")
            if key.lower() in SECRET_FIELDS:
                p.append(f"{where}: {key} is a secret; it belongs in the Secret")
            if url_password_problem(str(value)):
                p.append(f"{where}: {key} carries a password; it belongs in the Secret")
    if k8s.find("Secret"):
        p.append("k8s: a Secret is applied by kustomization.yaml; secrets are created out of band")
    tpl = k8s.secret_template
    tpl_keys = {**(tpl.get("stringData") or {}), **(tpl.get("data") or {})}
    if tpl.get("kind") != "Secret":
        p.append("secret.template.yaml: is not a Secret")
    for key, value in tpl_keys.items():
        if not env_name_ok(key):
            p.append(f"secret.template.yaml: {key} is not a Settings field")
        if value not in ("", None):
            p.append(f"secret.template.yaml: {key} has a value; the template must hold empty values only")
    for field_name in sorted(REQUIRED_SECRETS):
        if field_name.upper() not in tpl_keys:
            p.append(f"secret.template.yaml: the secret {field_name.upper()} is missing")

    # Per service: Deployment, Service, HPA, PDB.
    settings_of: dict[str, Settings] = {}
    service_port: dict[str, tuple[str, int]] = {}
    for name in SERVICES:
        dep = k8s.one("Deployment", name)
        if dep is None:
            p.append(f"k8s: no Deployment {name!r} (every service in libs.platform.config.SERVICES needs one)")
            continue
        where = f"k8s Deployment {name}"
        pod = dep["spec"]["template"]["spec"]
        pod_labels = dep["spec"]["template"]["metadata"].get("labels") or {}
        if not labels_match(dep["spec"]["selector"].get("matchLabels") or {}, pod_labels):
            p.append(f"{where}: selector does not match its pod labels")
        containers = pod.get("containers") or []
        if len(containers) != 1:
            p.append(f"{where}: expected one container, found {len(containers)}")
            continue
        c = containers[0]
        if c.get("command"):
            p.append(f"{where}: overrides the image ENTRYPOINT with command {c['command']}; use args")
        if c.get("args") != [f"services.{name}"]:
            p.append(f"{where}: args must be ['services.{name}'], found {c.get('args')}")
        p.extend(container_security_problems(where, pod, c, image_uid))
        env, env_problems = pod_env(k8s, c)
        p.extend(f"{where}: {e}" for e in env_problems)
        for key in env:
            if not env_name_ok(key):
                p.append(f"{where}: env {key} is not a Settings field")
        for field_name in sorted(LOOPBACK_FIELDS):
            value = env.get(field_name.upper())
            if value is None or "127.0.0.1" in value or "localhost" in value:
                p.append(f"{where}: {field_name.upper()} must be set (its default is the loopback), got {value!r}")
        settings, routes, errors = try_build(name, env, where)
        p.extend(errors)
        if settings is None:
            continue
        settings_of[name] = settings
        port = settings.port_of(name)
        http = [pt for pt in c.get("ports") or [] if pt.get("name") == "http"]
        if not http or http[0].get("containerPort") != port:
            found = http[0].get("containerPort") if http else None
            p.append(f"{where}: containerPort 'http' is {found}, but {name} listens on {port}")
        admin = settings.admin_port_of(name)
        if admin is not None:
            named = [pt for pt in c.get("ports") or [] if pt.get("name") == "admin"]
            if not named or named[0].get("containerPort") != admin:
                p.append(f"{where}: containerPort 'admin' must be {admin}, the admin port of {name}")
        p.extend(probe_problems(where, c, probe_port(settings, name), routes, settings))
        grace = pod.get("terminationGracePeriodSeconds", 30)
        pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command") or []
        pause = int(pre_stop[-1]) if pre_stop[:1] == ["sleep"] and pre_stop[-1].isdigit() else 0
        if grace < pause + settings.shutdown_timeout_seconds:
            p.append(
                f"{where}: terminationGracePeriodSeconds {grace} < preStop {pause}s + "
                f"SHUTDOWN_TIMEOUT_SECONDS {settings.shutdown_timeout_seconds}s"
            )

        svc = k8s.one("Service", name)
        if svc is None:
            p.append(f"k8s: no Service {name!r}")
        else:
            if not labels_match(svc["spec"].get("selector") or {}, pod_labels):
                p.append(f"k8s Service {name}: selector does not select the {name} pods")
            if svc["spec"].get("type", "ClusterIP") != "ClusterIP":
                p.append(f"k8s Service {name}: type {svc['spec']['type']} exposes it outside the cluster")
            admin_targets = ("admin", settings.admin_port_of(name))
            if any(sp.get("targetPort") in admin_targets for sp in svc["spec"].get("ports") or []):
                p.append(f"k8s Service {name}: exposes the admin port (/metrics, /readyz); probes need no Service")
            ports = [sp for sp in svc["spec"].get("ports") or [] if sp.get("targetPort") in ("http", port)]
            if not ports:
                p.append(f"k8s Service {name}: no port targets the container port http ({port})")
            else:
                service_port[name] = (svc["metadata"]["name"], ports[0]["port"])

        hpa = k8s.one("HorizontalPodAutoscaler", name)
        replicas = dep["spec"].get("replicas", 1)
        if hpa is None:
            p.append(f"k8s: no HorizontalPodAutoscaler {name!r}")
        else:
            ref = hpa["spec"]["scaleTargetRef"]
            if hpa.get("apiVersion") != "autoscaling/v2" or (ref.get("kind"), ref.get("name")) != ("Deployment", name):
                p.append(f"k8s HorizontalPodAutoscaler {name}: must be autoscaling/v2 targeting Deployment {name}")
            if not any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"].get("metrics") or []):
                p.append(f"k8s HorizontalPodAutoscaler {name}: needs a CPU utilization target")
            replicas = hpa["spec"].get("minReplicas", 1)
        pdb = k8s.one("PodDisruptionBudget", name)
        if pdb is None:
            p.append(f"k8s: no PodDisruptionBudget {name!r}")
        else:
            if not labels_match(pdb["spec"].get("selector", {}).get("matchLabels") or {}, pod_labels):
                p.append(f"k8s PodDisruptionBudget {name}: selector does not select the {name} pods")
            min_available = pdb["spec"].get("minAvailable")
            if not isinstance(min_available, int) or not 1 <= min_available < replicas:
                p.append(
                    f"k8s PodDisruptionBudget {name}: minAvailable {min_available} must be >= 1 and below the "
                    f"minimum replicas {replicas}, or nodes can never be drained"
                )

    # The gateway reaches its upstreams through their Services.
    for public in PUBLIC:
        public_settings = settings_of.get(public)
        if public_settings is None:
            continue
        for upstream in UPSTREAMS:
            if upstream not in service_port:
                continue
            svc_name, svc_port = service_port[upstream]
            url = urlsplit(public_settings.upstream_url(upstream))
            host = (url.hostname or "").split(".")
            if host[0] != svc_name or (len(host) > 1 and host[1] != ns) or url.port != svc_port:
                p.append(
                    f"k8s Deployment {public}: {upstream.upper()}_URL is {public_settings.upstream_url(upstream)}, "
                    f"but the {upstream} Service is {svc_name}:{svc_port}"
                )

    # Ingress: the public service only, for exactly the public paths.
    ingresses = k8s.find("Ingress")
    if not ingresses:
        p.append("k8s: no Ingress for the gateway")
    public_services = {service_port[s][0] for s in PUBLIC if s in service_port}
    rules: list[tuple[str, str]] = []
    for ing in ingresses:
        where = f"k8s Ingress {ing['metadata']['name']}"
        backends = [ing["spec"].get("defaultBackend")] if ing["spec"].get("defaultBackend") else []
        for rule in ing["spec"].get("rules") or []:
            public_cfg = [s.public_base_url for n, s in settings_of.items() if n in PUBLIC]
            if public_cfg and rule.get("host") != urlsplit(public_cfg[0]).hostname:
                p.append(f"{where}: host {rule.get('host')} is not the host of PUBLIC_BASE_URL {public_cfg[0]}")
            for path in (rule.get("http") or {}).get("paths") or []:
                backends.append(path["backend"])
                rules.append((path.get("path", "/"), path.get("pathType", "Prefix")))
        for backend in backends:
            target = (backend.get("service") or {}).get("name")
            if target not in public_services:
                p.append(f"{where}: routes to Service {target!r}; only {sorted(public_services)} may be public")
    for path in ["/", *routes_table]:
        if ingresses and not any(path_covers(rp, rt, path) for rp, rt in rules):
            p.append(f"k8s Ingress: public path {path} (services/gateway/routes.py) is not routed")
    for path in NOT_PUBLIC_PATHS:
        exposing = [rp for rp, rt in rules if path_covers(rp, rt, path)]
        if exposing:
            p.append(f"k8s Ingress: {path} must not be public, but rule(s) {exposing} route it")

    # The migration Job.
    jobs = [
        j
        for j in k8s.find("Job")
        if any(c.get("args") == MIGRATE_COMMAND for c in j["spec"]["template"]["spec"].get("containers") or [])
    ]
    if not jobs:
        p.append(f"k8s: no Job runs {' '.join(MIGRATE_COMMAND)}")
    for job in jobs:
        p.extend(job_pod_problems(k8s, f"k8s Job {job['metadata']['name']}", job["spec"]["template"], image_uid))
    p.extend(purge_cronjob_problems(k8s, image_uid))
    return p


def job_pod_problems(k8s: K8s, where: str, template: dict[str, Any], image_uid: int | None) -> Problems:
    """A Job's (or a CronJob's job's) pod: hardened like the services', and it reaches the database."""
    p: Problems = []
    pod = template["spec"]
    for c in pod["containers"]:
        p.extend(container_security_problems(where, pod, c, image_uid))
        env, env_problems = pod_env(k8s, c)
        p.extend(f"{where}: {e}" for e in env_problems)
        if "DATABASE_URL" not in env:
            p.append(f"{where}: DATABASE_URL is not provided")
    return p


def cronjob_args(cronjob: dict[str, Any]) -> list[list[str]]:
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return [c.get("args") or [] for c in pod.get("containers") or []]


def purge_cronjob_problems(k8s: K8s, image_uid: int | None) -> Problems:
    """The retention purge (docs/operations.md "Retention") runs at least hourly, one run at a time."""
    p: Problems = []
    purges = [cj for cj in k8s.find("CronJob") if any(a[:2] == PURGE_COMMAND for a in cronjob_args(cj))]
    if not purges:
        return [f"k8s: no CronJob runs {' '.join(PURGE_COMMAND)}"]
    for cj in purges:
        where = f"k8s CronJob {cj['metadata']['name']}"
        minute, hour, *_ = str(cj["spec"].get("schedule", "")).split() + ["", ""]
        if not minute.isdigit() or hour != "*":
            p.append(f"{where}: schedule {cj['spec'].get('schedule')!r} is not hourly ('M * * * *')")
        if cj["spec"].get("concurrencyPolicy") != "Forbid":
            p.append(f"{where}: concurrencyPolicy must be Forbid (a slow run must not pile up with the next)")
        p.extend(job_pod_problems(k8s, where, cj["spec"]["jobTemplate"]["spec"]["template"], image_uid))
    return p


def check_kustomization(kustomization: dict[str, Any], files: list[str]) -> Problems:
    p: Problems = []
    listed = list(kustomization.get("resources") or [])
    if SECRET_TEMPLATE.name in listed:
        p.append(f"kustomization.yaml: lists {SECRET_TEMPLATE.name}; applying it would blank the real Secret")
    expected = sorted(f for f in files if f not in (KUSTOMIZATION.name, SECRET_TEMPLATE.name))
    missing = sorted(set(expected) - set(listed))
    if missing:
        p.append(f"kustomization.yaml: does not list {missing}")
    return p


# --- loading ---------------------------------------------------------------------------------------
@cache
def _parsed(path: Path) -> tuple[Any, ...]:
    """Every document of a YAML file, parsed once per run (libyaml when present: the files are
    read by dozens of tests, and pure-Python parsing was most of tests/unit's time)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader))


def _yaml_docs(path: Path) -> list[Any]:
    """A fresh copy each call: the checks' tests change what they load."""
    return copy.deepcopy(list(_parsed(path)))


def load_compose() -> dict[str, Any]:
    return _yaml_docs(COMPOSE_FILE)[0]


def load_kustomization() -> dict[str, Any]:
    return _yaml_docs(KUSTOMIZATION)[0]


def load_k8s() -> K8s:
    kustomization = load_kustomization()
    docs = [d for name in kustomization.get("resources") or [] for d in _yaml_docs(K8S / name) if d]
    return K8s(
        docs=docs,
        secret_template=_yaml_docs(SECRET_TEMPLATE)[0],
        namespace=kustomization.get("namespace"),
    )


def load_image() -> Image:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def load_pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def load_ignore() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def deploy_commands(compose: dict[str, Any], k8s: K8s) -> list[list[str]]:
    commands = [compose_command(s) for s in (compose.get("services") or {}).values() if is_app_service(s)]
    for doc in k8s.docs:
        if doc.get("kind") in ("Deployment", "Job"):
            commands += [c.get("args") or [] for c in doc["spec"]["template"]["spec"].get("containers") or []]
        elif doc.get("kind") == "CronJob":
            commands += cronjob_args(doc)
    return commands


def fresh(doc: Any) -> Any:
    """A deep copy without YAML's shared (anchored) objects, so a mutation touches one place."""
    return json.loads(json.dumps(doc))


# --- tests: the real files -------------------------------------------------------------------------
def _assert_none(problems: Problems) -> None:
    assert not problems, "deploy/ does not match the code:\n  " + "\n  ".join(problems)


def test_compose_matches_the_code() -> None:
    _assert_none(check_compose(load_compose()))


def test_k8s_matches_the_code() -> None:
    _assert_none(check_k8s(load_k8s(), load_image().uid))


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    files = sorted(p.name for p in K8S.glob("*.yaml"))
    _assert_none(check_kustomization(load_kustomization(), files))


def test_dockerfile_runs_every_deploy_command() -> None:
    commands = deploy_commands(load_compose(), load_k8s())
    assert any(c[:2] == PURGE_COMMAND for c in commands), commands
    assert MIGRATE_COMMAND in commands and all([f"services.{s}"] in commands for s in SERVICES), commands
    _assert_none(check_dockerfile(load_image(), commands, load_pyproject(), load_ignore()))


def test_installed_package_has_the_migrations_and_templates() -> None:
    _assert_none(check_packaging(load_pyproject()))


def test_probe_paths_are_routes_of_every_app() -> None:
    settings = settings_from_env({"TOKEN_PEPPER": SAMPLE_SECRET})
    for name in SERVICES:
        routes = probe_routes(name, settings, build_app(name, settings))
        assert {LIVENESS, READINESS, "/metrics"} <= routes, f"services.{name} lacks a probe route: {routes}"


def test_public_apps_serve_no_metrics_or_readiness() -> None:
    """Issue 10 finding 6: the public port answers /metrics and /readyz like any unknown path."""
    settings = settings_from_env({"TOKEN_PEPPER": SAMPLE_SECRET})
    for name in PUBLIC:
        assert settings.admin_port_of(name) not in (None, settings.port_of(name))
        routes = get_routes(build_app(name, settings))
        assert not {READINESS, "/metrics"} & routes, f"services.{name} serves them publicly: {routes}"


# --- tests: the checks catch mismatches ------------------------------------------------------------
def _compose_service(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc["services"][name]


def _set_env(doc: dict[str, Any], service: str, **changes: str | None) -> None:
    env = dict(_compose_service(doc, service)["environment"])
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    _compose_service(doc, service)["environment"] = env


def _rename_env(doc: dict[str, Any], service: str, old: str, new: str) -> None:
    env = dict(_compose_service(doc, service)["environment"])
    env[new] = env.pop(old)
    _compose_service(doc, service)["environment"] = env


def default_port(service: str) -> int:
    return int(FIELDS[f"{service}_port"].default)


def _other(name: str) -> str:
    return next(s for s in UPSTREAMS if s != name)


COMPOSE_BREAKS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "published port differs from the gateway's port": (
        lambda d: _compose_service(d, PUBLIC[0]).update(ports=["8080:9090"]),
        "must publish its port",
    ),
    "healthcheck on the wrong port": (
        lambda d: _compose_service(d, UPSTREAMS[0])["healthcheck"].update(
            test=["CMD", "python", "-c", "urlopen('http://127.0.0.1:9999/healthz')"]
        ),
        "healthcheck probes port 9999",
    ),
    "healthcheck path the app does not serve": (
        lambda d: _compose_service(d, UPSTREAMS[0])["healthcheck"].update(
            test=["CMD", "python", "-c", f"urlopen('http://127.0.0.1:{default_port(UPSTREAMS[0])}/health')"]
        ),
        "healthcheck path /health is not a GET route",
    ),
    "typo in a setting name": (
        lambda d: _rename_env(d, UPSTREAMS[0], "TOKEN_PEPPER", "TOKEN_PEPER"),
        "TOKEN_PEPER is not a Settings field",
    ),
    "literal secret committed": (
        lambda d: _set_env(d, UPSTREAMS[0], TOKEN_PEPPER="a-literal-pepper-" + "y" * 32),
        "TOKEN_PEPPER must be a ${...} reference",
    ),
    "required secret missing, so the service cannot start": (
        lambda d: _set_env(d, UPSTREAMS[0], TOKEN_PEPPER=None),
        "build() fails with this environment",
    ),
    "internal service published": (
        lambda d: _compose_service(d, UPSTREAMS[0]).update(ports=["8081:8081"]),
        "only gateway may be reachable",
    ),
    "gateway points at the wrong upstream port": (
        lambda d: _set_env(d, PUBLIC[0], **{f"{UPSTREAMS[0].upper()}_URL": f"http://{UPSTREAMS[0]}:1234"}),
        f"{UPSTREAMS[0].upper()}_URL is http://{UPSTREAMS[0]}:1234",
    ),
    "gateway points at the wrong upstream service": (
        lambda d: _set_env(
            d,
            PUBLIC[0],
            **{f"{UPSTREAMS[0].upper()}_URL": f"http://{_other(UPSTREAMS[0])}:{default_port(UPSTREAMS[0])}"},
        ),
        f"but {UPSTREAMS[0]} runs as compose service",
    ),
    "wrong command": (
        lambda d: _compose_service(d, UPSTREAMS[0]).update(command=[f"services.{_other(UPSTREAMS[0])}"]),
        "command must be",
    ),
    "container left on the loopback": (
        lambda d: _set_env(d, UPSTREAMS[0], BIND_HOST=None),
        "BIND_HOST must be set",
    ),
    "literal database password": (
        lambda d: _set_env(d, UPSTREAMS[0], DATABASE_URL="postgresql://oauth:hunter2@postgres:5432/oauth"),
        "DATABASE_URL is a URL with a literal password",
    ),
    "a service missing": (lambda d: d["services"].pop(UPSTREAMS[-1]), "missing"),
}


@pytest.mark.parametrize("case", list(COMPOSE_BREAKS))
def test_compose_check_catches(case: str) -> None:
    mutate, expected = COMPOSE_BREAKS[case]
    doc = fresh(load_compose())
    mutate(doc)
    problems = check_compose(doc)
    assert any(expected in p for p in problems), f"{case}: expected {expected!r} in {problems}"


def _one(k8s: K8s, kind: str, name: str) -> dict[str, Any]:
    doc = k8s.one(kind, name)
    assert doc is not None, f"no {kind} {name}"
    return doc


def _container(k8s: K8s, name: str) -> dict[str, Any]:
    return _one(k8s, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def _drop(k8s: K8s, kind: str, name: str) -> None:
    k8s.docs.remove(_one(k8s, kind, name))


def _ingress_paths(k8s: K8s) -> list[dict[str, Any]]:
    return k8s.find("Ingress")[0]["spec"]["rules"][0]["http"]["paths"]


def _configmap(k8s: K8s) -> dict[str, Any]:
    return k8s.find("ConfigMap")[0]["data"]


K8S_BREAKS: dict[str, tuple[Callable[[K8s], object], str]] = {
    "containerPort differs from the service's port": (
        lambda k: _container(k, UPSTREAMS[-1])["ports"][0].update(containerPort=9999),
        f"containerPort 'http' is 9999, but {UPSTREAMS[-1]} listens on",
    ),
    "gateway probe on the public port": (
        lambda k: _container(k, PUBLIC[0])["readinessProbe"]["httpGet"].update(port="http"),
        f"readinessProbe targets port 'http' = {default_port(PUBLIC[0])}",
    ),
    "admin port exposed by the gateway Service": (
        lambda k: _one(k, "Service", PUBLIC[0])["spec"]["ports"].append(
            {"name": "admin", "port": 9080, "targetPort": "admin"}
        ),
        "exposes the admin port",
    ),
    "readiness probe on a path the app does not serve": (
        lambda k: _container(k, UPSTREAMS[0])["readinessProbe"]["httpGet"].update(path="/ready"),
        "readinessProbe must GET /readyz",
    ),
    "HPA missing": (lambda k: _drop(k, "HorizontalPodAutoscaler", UPSTREAMS[1]), "no HorizontalPodAutoscaler"),
    "PDB missing": (lambda k: _drop(k, "PodDisruptionBudget", PUBLIC[0]), "no PodDisruptionBudget"),
    "Service missing": (lambda k: _drop(k, "Service", UPSTREAMS[0]), f"no Service {UPSTREAMS[0]!r}"),
    "Deployment missing": (lambda k: _drop(k, "Deployment", UPSTREAMS[0]), f"no Deployment {UPSTREAMS[0]!r}"),
    "secret value committed in the template": (
        lambda k: k.secret_template["stringData"].update(TOKEN_PEPPER="committed-" + "z" * 40),
        "TOKEN_PEPPER has a value",
    ),
    "required secret missing from the template": (
        lambda k: k.secret_template["stringData"].pop("TOKEN_PEPPER"),
        "the secret TOKEN_PEPPER is missing",
    ),
    "typo in a ConfigMap key": (
        lambda k: _configmap(k).update(PUBLIC_BASE_ULR="https://auth.example.com"),
        "PUBLIC_BASE_ULR is not a Settings field",
    ),
    "secret in the ConfigMap": (
        lambda k: _configmap(k).update(INTERNAL_SERVICE_TOKEN="oops"),
        "INTERNAL_SERVICE_TOKEN is a secret",
    ),
    "gateway upstream URL pointing at the wrong Service port": (
        lambda k: _configmap(k).update({f"{UPSTREAMS[0].upper()}_URL": f"http://{UPSTREAMS[0]}:1"}),
        f"{UPSTREAMS[0].upper()}_URL is http://{UPSTREAMS[0]}:1",
    ),
    "Ingress routing to an internal service": (
        lambda k: _ingress_paths(k)[1]["backend"]["service"].update(name=UPSTREAMS[0]),
        f"routes to Service {UPSTREAMS[0]!r}",
    ),
    "Ingress exposing /internal": (
        lambda k: _ingress_paths(k).append(
            {"path": "/internal", "pathType": "Prefix", "backend": _ingress_paths(k)[0]["backend"]}
        ),
        "/internal must not be public",
    ),
    "Ingress catch-all exposing /metrics": (
        lambda k: _ingress_paths(k)[0].update(pathType="Prefix"),
        "/metrics must not be public",
    ),
    "writable root filesystem": (
        lambda k: _container(k, PUBLIC[0])["securityContext"].update(readOnlyRootFilesystem=False),
        "readOnlyRootFilesystem must be true",
    ),
    "runs as root": (
        lambda k: [
            _container(k, PUBLIC[0])["securityContext"].update(runAsNonRoot=False, runAsUser=0),
            _one(k, "Deployment", PUBLIC[0])["spec"]["template"]["spec"]["securityContext"].update(runAsNonRoot=False),
        ],
        "runAsNonRoot must be true",
    ),
    "no resources": (lambda k: _container(k, UPSTREAMS[0]).pop("resources"), "resources.limits.memory is missing"),
    "service exposed as LoadBalancer": (
        lambda k: _one(k, "Service", UPSTREAMS[0])["spec"].update(type="LoadBalancer"),
        "type LoadBalancer exposes it",
    ),
    "wrong args": (lambda k: _container(k, UPSTREAMS[0]).update(args=["services.nope"]), "args must be"),
    "migration Job missing": (lambda k: _drop(k, "Job", k.find("Job")[0]["metadata"]["name"]), "no Job runs"),
    "purge CronJob missing": (lambda k: _drop(k, "CronJob", "oauth-purge"), "no CronJob runs oauthctl purge"),
    "purge CronJob daily": (
        lambda k: _one(k, "CronJob", "oauth-purge")["spec"].update(schedule="0 3 * * *"),
        "not hourly",
    ),
    "purge CronJob runs overlap": (
        lambda k: _one(k, "CronJob", "oauth-purge")["spec"].update(concurrencyPolicy="Allow"),
        "concurrencyPolicy must be Forbid",
    ),
    "purge CronJob with a writable root filesystem": (
        lambda k: _one(k, "CronJob", "oauth-purge")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
            "securityContext"
        ].update(readOnlyRootFilesystem=False),
        "k8s CronJob oauth-purge: securityContext.readOnlyRootFilesystem must be true",
    ),
}


@pytest.mark.parametrize("case", list(K8S_BREAKS))
def test_k8s_check_catches(case: str) -> None:
    mutate, expected = K8S_BREAKS[case]
    real = load_k8s()
    k8s = K8s(docs=fresh(real.docs), secret_template=fresh(real.secret_template), namespace=real.namespace)
    mutate(k8s)
    problems = check_k8s(k8s, load_image().uid)
    assert any(expected in p for p in problems), f"{case}: expected {expected!r} in {problems}"


def test_k8s_check_catches_a_new_public_route_missing_from_the_ingress() -> None:
    problems = check_k8s(load_k8s(), load_image().uid, routes_table={**ROUTES, "/brand-new": "account"})
    assert any("public path /brand-new" in p for p in problems), problems


def test_k8s_check_catches_a_uid_mismatch_with_the_image() -> None:
    problems = check_k8s(load_k8s(), 4242)
    assert any("runAsUser must be the image's USER 4242" in p for p in problems), problems


def test_kustomization_check_catches_the_secret_template() -> None:
    kustomization = copy.deepcopy(load_kustomization())
    kustomization["resources"].append(SECRET_TEMPLATE.name)
    files = sorted(p.name for p in K8S.glob("*.yaml"))
    assert any("blank the real Secret" in p for p in check_kustomization(kustomization, files))


DOCKERFILE_BREAKS: dict[str, tuple[Callable[[Image, list[list[str]]], object], str]] = {
    "runs as root": (lambda i, c: setattr(i, "user", "root"), "non-root USER"),
    "single stage": (lambda i, c: setattr(i, "stages", i.stages[-1:]), "multi-stage"),
    "entrypoint cannot take module names": (lambda i, c: setattr(i, "entrypoint", ["python"]), "ENTRYPOINT"),
    "command naming no module": (lambda i, c: c.append(["services.acount"]), "no module 'services.acount'"),
    "command with arguments the CLI rejects": (lambda i, c: c.append(["oauthctl", "migrat"]), "rejects the arguments"),
    "binds to the loopback": (lambda i, c: i.env.pop("BIND_HOST"), "BIND_HOST=0.0.0.0"),
    "editable install": (lambda i, c: i.runs.append("pip install -e ."), "editable install"),
}


@pytest.mark.parametrize("case", list(DOCKERFILE_BREAKS))
def test_dockerfile_check_catches(case: str) -> None:
    mutate, expected = DOCKERFILE_BREAKS[case]
    image = copy.deepcopy(load_image())
    commands = deploy_commands(load_compose(), load_k8s())
    mutate(image, commands)
    problems = check_dockerfile(image, commands, load_pyproject(), load_ignore())
    assert any(expected in p for p in problems), f"{case}: expected {expected!r} in {problems}"


def test_dockerignore_check_catches_a_copied_path_left_out() -> None:
    problems = check_dockerfile(load_image(), [], load_pyproject(), [*load_ignore(), "services"])
    assert any("COPY services" in p for p in problems), problems
