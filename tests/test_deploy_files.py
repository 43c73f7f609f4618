"""Structural checks of the deployment files: Collector configs, Dockerfile, compose, Kubernetes.

Docker, the Collector, Jaeger, Tempo, Grafana and Phoenix cannot run on the team's machines, so
nothing here starts them. These tests check instead that every file parses, that the files agree with
each other (ports, hostnames, volumes, names) and with the service itself (``config.Settings``
defaults, ``config.load_settings`` validation, the routes of ``adapter.app.create_app``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry

from config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR = ROOT / "otel-collector.yaml"
GATEWAY = ROOT / "deploy" / "otel-collector-gateway.yaml"
COMPOSE = ROOT / "deploy" / "compose.yaml"
TEMPO = ROOT / "deploy" / "tempo.yaml"
GRAFANA_TEMPO = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "tempo.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "kubernetes"
CLI = ROOT / "adapter" / "cli.py"

PIPELINE_KINDS = ("receivers", "processors", "exporters", "connectors")
OTLP_GRPC_EXPORTERS = {"otlp_grpc", "otlp"}  # "otlp": the name before Collector 0.144.0 (now an alias)
LOAD_BALANCING_EXPORTERS = {"load_balancing", "loadbalancing"}  # likewise, renamed in 2026
COLLECTOR_SERVICE = "otel-collector"  # the Collector's service name in compose
SERVICE = "dynamiq-otel"  # the service's name in compose and Kubernetes
LOOPBACK = "127.0.0.1"
HEALTH_CHECK_PORT = 13133
JAEGER_OTLP_GRPC_PORT = 4317  # Jaeger's default OTLP gRPC port (compose runs it with no config file)
PHOENIX_OTLP_GRPC_PORT = 4317  # Phoenix's default gRPC port (PHOENIX_GRPC_PORT)


# --- helpers -------------------------------------------------------------------------------------


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def component_type(name: str) -> str:
    """``otlp_grpc/jaeger`` -> ``otlp_grpc`` (a component id is ``type[/name]``)."""
    return name.split("/", 1)[0]


def host_port(endpoint: str) -> tuple[str, int]:
    """``0.0.0.0:4317``, ``jaeger:4317`` or ``http://host:4317`` -> (host, port)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    assert parts.hostname is not None and parts.port is not None, f"no host:port in {endpoint!r}"
    return parts.hostname, parts.port


def collector_configs() -> list[Any]:
    return [pytest.param(COLLECTOR, id="collector"), pytest.param(GATEWAY, id="gateway")]


def compose() -> dict[str, Any]:
    document: dict[str, Any] = load(COMPOSE)
    return document


def compose_service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose()["services"]
    assert name in services, f"compose has no service {name!r}"
    return services[name]  # type: ignore[no-any-return]


def published_ports(service: dict[str, Any]) -> list[tuple[str | None, int, int]]:
    """(host ip, host port, container port) of every published port, short or long syntax."""
    result = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            result.append((entry.get("host_ip"), int(entry["published"]), int(entry["target"])))
            continue
        spec = str(entry).split("/", 1)[0]
        pieces = spec.rsplit(":", 2)
        if len(pieces) == 3:
            result.append((pieces[0], int(pieces[1]), int(pieces[2])))
        elif len(pieces) == 2:
            result.append((None, int(pieces[0]), int(pieces[1])))
        else:
            result.append((None, 0, int(pieces[0])))  # container port only: a random host port, all interfaces
    return result


def named_volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> named volume, for the service's short- or long-syntax volume mounts."""
    top_level = compose().get("volumes") or {}
    mounts = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            source, target = entry.get("source", ""), entry["target"]
        else:
            source, target = str(entry).split(":")[:2]
        if source in top_level:
            mounts[target] = source
    return mounts


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path (relative to deploy/, as compose resolves it) of bind mounts."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (COMPOSE.parent / source).resolve()
    return mounts


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, given: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` with ``given`` as the environment."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if given.get(name):
            return given[name]
        if op in (":-", "-"):
            return arg or ""
        if op in (":?", "?"):
            raise AssertionError(f"compose would stop: {name} is required ({arg})")
        return ""

    return _INTERPOLATION.sub(substitute, value)


def compose_environment(service: dict[str, Any], given: dict[str, str]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: interpolate(str(value), given) for name, value in environment.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    result = []
    for statement in logical:
        keyword, _, arguments = statement.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    return result


def dockerfile_env() -> dict[str, str]:
    """The ENV values of the last (runtime) stage."""
    instructions = dockerfile_instructions()
    last_from = max(index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return env_values(instructions[last_from:])


def env_values(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """The values the ENV instructions among ``instructions`` set."""
    values: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "ENV":
            for token in shlex.split(arguments):
                name, _, value = token.partition("=")
                values[name] = value
    return values


def k8s_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    return documents


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in k8s_documents() if doc["kind"] == kind]


def k8s_object(kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [doc for doc in k8s_objects(kind) if name is None or doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def workload() -> dict[str, Any]:
    return k8s_object("StatefulSet", SERVICE)


def container() -> dict[str, Any]:
    containers = workload()["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == SERVICE)


def container_port(name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    assert name_or_number in ports, f"no container port named {name_or_number!r}"
    return int(ports[name_or_number])


def configmap_settings_text() -> str:
    data = k8s_object("ConfigMap")["data"]
    mounted = next(iter(data))
    return str(data[mounted])


def configmap_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The ConfigMap's YAML through ``load_settings``, the access keys set from the Secret as in the pod."""
    secret = k8s_object("Secret")
    for variable in container().get("env", []):
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        if reference:
            assert reference["name"] == secret["metadata"]["name"]
            monkeypatch.setenv(variable["name"], secret["stringData"][reference["key"]])
    path = tmp_path / "dynamiq-otel.yaml"
    path.write_text(configmap_settings_text(), encoding="utf-8")
    return load_settings(path)


def probes() -> dict[str, dict[str, Any]]:
    spec = container()
    return {kind: spec[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe") if kind in spec}


def service_get_paths(make_settings: Any) -> set[str]:
    from adapter.app import create_app

    app = create_app(make_settings(), CollectorRegistry())
    return {route.path for route in app.routes if "GET" in getattr(route, "methods", ())}


# --- Collector configurations ---------------------------------------------------------------------


@pytest.mark.parametrize("path", collector_configs())
def test_collector_components_are_defined_and_used(path: Path) -> None:
    config = load(path)
    pipelines = config["service"]["pipelines"]
    assert pipelines, "no pipeline"
    used: dict[str, set[str]] = {kind: set() for kind in PIPELINE_KINDS}
    for name, pipeline in pipelines.items():
        assert pipeline.get("receivers") and pipeline.get("exporters"), f"pipeline {name} needs receivers and exporters"
        for kind in ("receivers", "processors", "exporters"):
            used[kind].update(pipeline.get(kind) or [])
    connectors = set(config.get("connectors") or {})
    # A connector is an exporter of one pipeline and a receiver of another.
    used["connectors"] = (used["receivers"] | used["exporters"]) & connectors
    used["receivers"] -= connectors
    used["exporters"] -= connectors
    for kind in PIPELINE_KINDS:
        defined = set(config.get(kind) or {})
        assert used[kind] <= defined, f"{kind} used but not defined: {sorted(used[kind] - defined)}"
        assert defined <= used[kind], f"{kind} defined but unused: {sorted(defined - used[kind])}"
    defined_extensions = set(config.get("extensions") or {})
    enabled_extensions = set(config["service"].get("extensions") or [])
    assert enabled_extensions == defined_extensions, "extensions defined and enabled differ"


@pytest.mark.parametrize("path", collector_configs())
def test_memory_limiter_comes_first_and_batch_follows(path: Path) -> None:
    config = load(path)
    for name, pipeline in config["service"]["pipelines"].items():
        processors = [component_type(p) for p in pipeline.get("processors") or []]
        assert processors[:1] == ["memory_limiter"], f"pipeline {name}: memory_limiter must be the first processor"
        assert "batch" in processors, f"pipeline {name} has no batch processor"
    limiter = config["processors"]["memory_limiter"]
    assert limiter["check_interval"]
    assert "limit_percentage" in limiter or "limit_mib" in limiter


@pytest.mark.parametrize("path", collector_configs())
def test_exporters_retry_and_queue_on_file_storage(path: Path) -> None:
    config = load(path)
    extensions = config.get("extensions") or {}
    for name, exporter in config["exporters"].items():
        assert exporter["retry_on_failure"]["enabled"] is True, name
        queue = exporter["sending_queue"]
        assert queue["enabled"] is True, name
        storage = queue.get("storage")
        assert storage in extensions, f"{name}: sending_queue.storage {storage!r} is not a defined extension"
        assert component_type(storage) == "file_storage", f"{name}: the persistent queue must be on file_storage"
        assert storage in config["service"]["extensions"], f"{name}: {storage} is not enabled in service.extensions"
    for name, extension in extensions.items():
        if component_type(name) == "file_storage":
            assert extension["directory"], "file_storage needs a directory"
            compaction = extension.get("compaction") or {}
            if compaction.get("on_start") or compaction.get("on_rebound"):
                # The default compaction directory is the OS temp dir, absent from the Collector image.
                assert compaction.get("directory"), "set compaction.directory (the image has no /tmp)"


@pytest.mark.parametrize("path", collector_configs())
def test_receivers_and_health_check_listen_on_all_interfaces(path: Path) -> None:
    config = load(path)
    protocols = config["receivers"]["otlp"]["protocols"]
    assert host_port(protocols["grpc"]["endpoint"]) == ("0.0.0.0", 4317)
    assert host_port(protocols["http"]["endpoint"]) == ("0.0.0.0", 4318)
    assert host_port(config["extensions"]["health_check"]["endpoint"]) == ("0.0.0.0", HEALTH_CHECK_PORT)


def test_collector_exports_to_jaeger_and_tempo_over_otlp_grpc() -> None:
    exporters = load(COLLECTOR)["exporters"]
    hosts = {}
    for name, exporter in exporters.items():
        assert component_type(name) in OTLP_GRPC_EXPORTERS, f"{name}: expected an OTLP gRPC exporter"
        hosts[name.split("/", 1)[1]] = host_port(exporter["endpoint"])[0]
    assert hosts.get("jaeger") == "jaeger"
    assert hosts.get("tempo") == "tempo"


def test_gateway_load_balances_by_trace_id() -> None:
    exporters = load(GATEWAY)["exporters"]
    balancers = [e for name, e in exporters.items() if component_type(name) in LOAD_BALANCING_EXPORTERS]
    assert len(balancers) == 1, "the gateway needs one load_balancing exporter"
    balancer = balancers[0]
    assert balancer["routing_key"] == "traceID"
    assert "otlp" in balancer["protocol"], "the load balancer speaks OTLP to its backends"
    assert "endpoint" not in balancer["protocol"]["otlp"], "the endpoint comes from the resolver"
    resolvers = [kind for kind, value in balancer["resolver"].items() if value]
    assert resolvers == ["static"], "exactly one resolver is active (the DNS/k8s ones are commented examples)"
    hostnames = balancer["resolver"]["static"]["hostnames"]
    assert len(hostnames) >= 2
    for hostname in hostnames:
        assert host_port(hostname)[1] == 4317, f"{hostname}: backends take OTLP gRPC on 4317"


# --- compose ---------------------------------------------------------------------------------------


def test_compose_publishes_ports_only_on_loopback() -> None:
    for name, service in compose()["services"].items():
        assert service.get("network_mode") != "host", f"{name} uses the host network"
        for host_ip, _, target in published_ports(service):
            assert host_ip == LOOPBACK, f"{name} publishes {target} on {host_ip or 'every interface'}"


def test_compose_mounts_the_collector_config_it_runs() -> None:
    collector = compose_service(COLLECTOR_SERVICE)
    arguments = " ".join(collector["command"])
    config_path = re.search(r"--config[= ](\S+)", arguments)
    assert config_path, "the Collector's command names no --config"
    assert bind_mounts(collector).get(config_path[1]) == COLLECTOR
    assert "opentelemetry-collector-contrib" in collector["image"]
    version = collector["image"].rsplit(":", 1)[1]
    assert version != "latest"
    assert version in COLLECTOR.read_text(encoding="utf-8"), "otel-collector.yaml names another Collector version"


def test_compose_publishes_the_collector_receivers_and_health_check() -> None:
    receivers = load(COLLECTOR)["receivers"]["otlp"]["protocols"]
    targets = {target for _, _, target in published_ports(compose_service(COLLECTOR_SERVICE))}
    assert host_port(receivers["grpc"]["endpoint"])[1] in targets
    assert host_port(receivers["http"]["endpoint"])[1] in targets
    assert HEALTH_CHECK_PORT in targets


def test_service_in_compose_exports_to_the_collector_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's compose environment validates and points at the receiver of its protocol."""
    environment = compose_environment(compose_service(SERVICE), {"DYNAMIQ_OTEL_ACCESS_KEYS": "k" * 32})
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(None)
    receivers = load(COLLECTOR)["receivers"]["otlp"]["protocols"]
    receiver = receivers["grpc" if settings.otlp_protocol == "grpc" else "http"]
    host, port = host_port(settings.traces_endpoint)
    assert host == COLLECTOR_SERVICE
    assert port == host_port(receiver["endpoint"])[1]


def test_collector_exporters_reach_compose_services_on_their_receiver_ports() -> None:
    services = compose()["services"]
    tempo = load(TEMPO)["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    expected_ports = {
        "tempo": host_port(tempo)[1],
        "jaeger": JAEGER_OTLP_GRPC_PORT,
        "phoenix": PHOENIX_OTLP_GRPC_PORT,
    }
    for name, exporter in load(COLLECTOR)["exporters"].items():
        host, port = host_port(exporter["endpoint"])
        assert host in services, f"{name}: {host} is not a compose service"
        assert port == expected_ports[host], f"{name}: {host} takes OTLP gRPC on {expected_ports[host]}"
        assert host in (compose_service(COLLECTOR_SERVICE).get("depends_on") or {}), f"start {host} first"


def test_file_storage_directory_is_on_a_named_volume() -> None:
    collector = compose_service(COLLECTOR_SERVICE)
    volumes = named_volume_mounts(collector)
    for name, extension in load(COLLECTOR)["extensions"].items():
        if component_type(name) == "file_storage":
            assert extension["directory"] in volumes, "the persistent queue must be on a volume"
            compaction_dir = (extension.get("compaction") or {}).get("directory")
            if compaction_dir:
                assert compaction_dir in volumes
            # A fresh named volume is root-owned; something must hand it to the Collector's user.
            volume = volumes[extension["directory"]]
            owners = [s for s in compose()["services"].values() if "chown" in " ".join(s.get("command") or [])]
            assert any(volume in named_volume_mounts(s).values() for s in owners), f"nothing chowns {volume}"


def test_service_store_is_on_a_volume_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = dockerfile_env()["DYNAMIQ_OTEL_DATA_DIR"]
    volume_instruction = [args for keyword, args in dockerfile_instructions() if keyword == "VOLUME"]
    assert volume_instruction and data_dir in volume_instruction[-1]
    assert data_dir in named_volume_mounts(compose_service(SERVICE))
    assert str(configmap_settings(tmp_path, monkeypatch).data_dir) == data_dir
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    templates = {t["metadata"]["name"] for t in workload()["spec"]["volumeClaimTemplates"]}
    assert mounts.get(data_dir) in templates, "the store must be on the pod's own PersistentVolumeClaim"


def test_tempo_data_source_points_at_tempo() -> None:
    datasources = load(GRAFANA_TEMPO)["datasources"]
    tempo = next(d for d in datasources if d["type"] == "tempo")
    host, port = host_port(tempo["url"])
    assert host == "tempo" and host in compose()["services"]
    assert port == load(TEMPO)["server"]["http_listen_port"]
    grafana = compose_service("grafana")
    assert bind_mounts(grafana).get("/etc/grafana/provisioning/datasources") == GRAFANA_TEMPO.parent
    assert bind_mounts(compose_service("tempo")).get("/etc/tempo.yaml") == TEMPO
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


# --- Dockerfile ------------------------------------------------------------------------------------


def test_dockerfile_is_slim_non_root_and_installs_only_the_project() -> None:
    instructions = dockerfile_instructions()
    bases = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in ("root", "0"), "the last USER is root"
    installs = [args for keyword, args in instructions if keyword == "RUN" and "pip install" in args]
    assert installs, "no pip install"
    for command in installs:
        assert re.search(r"pip install \.(\s|$)", command), f"install the project only: {command}"
        assert "[" not in command and "-e " not in command, f"no extras, no editable install: {command}"
    env = dockerfile_env()
    assert env["DYNAMIQ_OTEL_HOST"] == "0.0.0.0"
    entrypoint = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    cmd = [args for keyword, args in instructions if keyword == "CMD"]
    assert entrypoint and yaml.safe_load(entrypoint[-1]) == ["dynamiq-otel"]
    assert cmd and yaml.safe_load(cmd[-1]) == ["serve"]


def test_dockerfile_compiles_the_mapping_in_the_build_stage_only() -> None:
    instructions = dockerfile_instructions()
    stages = [index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    build, runtime = instructions[stages[0] : stages[-1]], instructions[stages[-1] :]
    assert env_values(build).get("DYNAMIQ_OTEL_USE_MYPYC") == "1", "the image ships the mapping compiled (setup.py)"
    runs = " ".join(args for keyword, args in build if keyword == "RUN")
    assert runs.index("apt-get install") < runs.index("pip install ."), "a C compiler before the install"
    assert "gcc" in runs
    assert "DYNAMIQ_OTEL_USE_MYPYC" not in dockerfile_env(), "a build switch, not a runtime variable"
    assert not [args for keyword, args in runtime if keyword == "RUN" and "gcc" in args], "no compiler at runtime"
    copied = " ".join(args for keyword, args in build if keyword == "COPY")
    assert "setup.py" in copied, "setup.py holds the build switch"


def test_dockerfile_health_check_asks_healthz_with_python(make_settings: Any) -> None:
    checks = [args for keyword, args in dockerfile_instructions() if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    check = checks[0]
    assert "urllib" in check and "curl" not in check and "wget" not in check
    path = re.search(r"127\.0\.0\.1:%s(/\w+)", check)
    assert path, "the health check asks no path on 127.0.0.1"
    assert path[1] == "/healthz"
    assert path[1] in service_get_paths(make_settings)


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "start from nothing and allow what the build needs"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert {"pyproject.toml", "adapter", "config", "mapping"} <= allowed
    assert not allowed & {"tests", ".git", ".venv", ".env", "deploy"}
    copied = [args for keyword, args in dockerfile_instructions() if keyword == "COPY" and "--from" not in args]
    for args in copied:
        for source in args.split()[:-1]:
            assert source.rstrip("/").replace("[d]", "d") in allowed, f"COPY {source} is not in the context"


# --- the service port and probe paths agree everywhere --------------------------------------------


def test_service_port_agrees_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = Settings.model_fields["port"].default
    exposed = [int(p.split("/")[0]) for k, args in dockerfile_instructions() if k == "EXPOSE" for p in args.split()]
    assert exposed == [default]
    assert {target for _, _, target in published_ports(compose_service(SERVICE))} == {default}
    assert configmap_settings(tmp_path, monkeypatch).port == default
    assert container_port("http") == default
    for service in k8s_objects("Service"):
        for port in service["spec"]["ports"]:
            assert port["port"] == default
            assert container_port(port["targetPort"]) == default
    for name, probe in probes().items():
        assert container_port(probe["httpGet"]["port"]) == default, name
    annotations = workload()["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/port" in annotations:
        assert int(annotations["prometheus.io/port"]) == default


def test_probe_paths_exist_in_the_service(make_settings: Any) -> None:
    paths = service_get_paths(make_settings)
    found = probes()
    assert set(found) == {"startupProbe", "livenessProbe", "readinessProbe"}
    assert found["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert found["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert found["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "/healthz" in paths
    if "/readyz" not in paths:
        pytest.xfail("the /readyz readiness endpoint is not in adapter.app yet")
    scrape = workload()["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/path")
    for path in {"/readyz", scrape or "/readyz"}:
        assert path in paths


# --- Kubernetes ------------------------------------------------------------------------------------


def test_kubernetes_config_map_is_valid_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configmap_settings(tmp_path, monkeypatch)
    assert settings.host == "0.0.0.0"
    assert settings.access_keys, "the keys come from the Secret"
    mounted = {m["mountPath"] for m in container()["volumeMounts"] if m["name"] == "config"}
    args = container()["args"]
    config_file = args[args.index("--config") + 1]
    assert str(Path(config_file).parent) in mounted
    assert Path(config_file).name in k8s_object("ConfigMap")["data"]
    assert "access_keys" not in yaml.safe_load(configmap_settings_text()), "keys belong in the Secret"


def test_kubernetes_secret_is_a_marked_example() -> None:
    secret = k8s_object("Secret")
    values = list(secret.get("stringData", {}).values())
    assert values and all("REPLACE" in value for value in values)
    assert "REPLACE" in (K8S / "secret.yaml").read_text(encoding="utf-8").split("apiVersion")[0]


def test_kubernetes_workload_is_a_hardened_stateful_set() -> None:
    statefulset = workload()
    spec = statefulset["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] >= 2
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    headless = k8s_object("Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    for service in k8s_objects("Service"):
        assert service["spec"]["selector"].items() <= labels.items()
    budget = k8s_object("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "minAvailable" in budget["spec"] or "maxUnavailable" in budget["spec"]
    # The Service named dynamiq-otel would inject DYNAMIQ_OTEL_PORT=tcp://..., a setting's variable.
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    resources = container()["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]


def test_termination_grace_covers_the_drain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """preStop + uvicorn's graceful wait + the export worker's stop must fit in the grace period."""
    settings = configmap_settings(tmp_path, monkeypatch)
    pod = workload()["spec"]["template"]["spec"]
    pre_stop = container().get("lifecycle", {}).get("preStop", {})
    command = pre_stop.get("exec", {}).get("command", [])
    pre_stop_s = float(command[-1]) if command[:1] == ["sleep"] else float(pre_stop.get("sleep", {}).get("seconds", 0))
    # adapter/cli.py: uvicorn's timeout_graceful_shutdown is shutdown_grace + a margin; then the
    # lifespan stops the export worker, which may take shutdown_grace again.
    margin = re.search(
        r"timeout_graceful_shutdown\"?\s*[:=]\s*int\(settings\.shutdown_grace\)\s*\+\s*(\d+)", CLI.read_text()
    )
    uvicorn_wait = settings.shutdown_grace + (int(margin[1]) if margin else 30)
    drain = pre_stop_s + uvicorn_wait + settings.shutdown_grace
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_grace
    assert pod["terminationGracePeriodSeconds"] > drain, f"the drain can take {drain:g} s"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load(K8S / "kustomization.yaml")
    manifests = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    namespace = k8s_object("Namespace")["metadata"]["name"]
    assert kustomization["namespace"] == namespace
    for document in k8s_documents():
        assert document["metadata"].get("namespace", namespace) == namespace
    images = {image["name"] for image in kustomization.get("images", [])}
    assert container()["image"] in images, "kustomization.yaml must name the image to deploy"
