"""deploy/: the container recipe and the Kubernetes manifests agree with the server's real
code: its argparse parser and config loader, its Starlette routes and auth exemptions, its
shutdown timings and setup.cfg's ``serve`` extra. Nothing here needs Docker or a cluster.

The optional bearer-token variant of the Deployment lives in deployment.yaml as lines
marked ``#auth `` (deploy/README.md: uncomment them); every check of the container runs on
both the default and that variant.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import json
import re
import shlex
import signal
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient
from tfllm_serving.cli import build_parser, load_config
from tfllm_serving.config import ServerConfig
from tfllm_serving.process import ServerProcess, free_port
from tfllm_serving.server import ServingServer

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
AUTH_MARKER = "#auth "
VARIANTS = ["default", "auth"]
TF_PACKAGES = {"tensorflow", "tensorflow-text", "tensorflow-serving-api", "keras", "keras-hub",
               "tf-keras", "tensorboard", "tf2onnx"}


# ---- reading the manifests ---------------------------------------------------------------


def manifests(variant: str = "default") -> list[dict[str, Any]]:
    """Every document of deploy/kubernetes/*.yaml, as `kubectl apply -f deploy/kubernetes/`
    reads them (not recursive); with variant "auth" the ``#auth `` lines are uncommented."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        if variant == "auth":
            text = text.replace(AUTH_MARKER, "")
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def one(kind: str, variant: str = "default", name: str | None = None) -> dict[str, Any]:
    found = [d for d in manifests(variant) if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def every(kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == kind]


def pod_spec(variant: str = "default") -> dict[str, Any]:
    return one("Deployment", variant)["spec"]["template"]["spec"]


def container(variant: str = "default") -> dict[str, Any]:
    containers = pod_spec(variant)["containers"]
    assert len(containers) == 1
    return containers[0]


def container_ports(variant: str = "default") -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(variant)["ports"]}


def resolve_port(port: int | str, variant: str = "default") -> int:
    """A probe's or a Service's targetPort: a number, or the name of a container port."""
    if isinstance(port, int):
        return port
    ports = container_ports(variant)
    assert port in ports, f"port name {port!r} is not a container port ({sorted(ports)})"
    return ports[port]


def mounted_volume(path: str, variant: str = "default") -> tuple[dict[str, Any], dict[str, Any]]:
    """(volumeMount, volume) of the container mount that holds ``path``."""
    mounts = [m for m in container(variant)["volumeMounts"]
              if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"{path} is on no volume mount of the container"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volumes = {v["name"]: v for v in pod_spec(variant)["volumes"]}
    assert mount["name"] in volumes, f"volumeMount {mount['name']} has no volume"
    return mount, volumes[mount["name"]]


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def parse_server_args(args: list[str]) -> argparse.Namespace:
    """The server's own parser: an unknown or malformed flag fails the test."""
    try:
        return build_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"tfllm-serve rejects {args}: exit {exc.code}")


def container_config(variant: str, tmp: Path) -> ServerConfig:
    """The ServerConfig the container's args produce, through the CLI's own load_config,
    with --config read from the ConfigMap the pod mounts there and the token file (auth
    variant) stood in for by a local file."""
    return load_config(localize(parse_server_args(container(variant)["args"]), variant, tmp))


def localize(args: argparse.Namespace, variant: str, tmp: Path) -> argparse.Namespace:
    """The pod's files made local: --config from its ConfigMap, a stand-in token file."""
    if args.config:
        mount, volume = mounted_volume(args.config, variant)
        assert "configMap" in volume, f"{args.config} is not on a ConfigMap volume"
        cm = one("ConfigMap", name=volume["configMap"]["name"])
        key = Path(args.config).relative_to(mount["mountPath"]).as_posix()
        assert key in cm["data"], f"ConfigMap {cm['metadata']['name']} has no key {key}"
        local = tmp / "serve.yaml"
        local.write_text(cm["data"][key], encoding="utf-8")
        args.config = str(local)
    if args.auth_token_file:
        token = tmp / "token"
        token.write_text("s3cret\n", encoding="utf-8")
        args.auth_token_file = str(token)
    return args


def local_server(cfg: ServerConfig, tmp: Path) -> ServingServer:
    """The server the CLI would build from ``cfg``, on an empty local model repository
    (its lifespan, which starts polling and gRPC, is never entered)."""
    repo = tmp / "models"
    repo.mkdir(exist_ok=True)
    cfg.model_repo = str(repo)
    return ServingServer(cfg)


def starlette_app(app: Any) -> Starlette:
    """Unwrap the auth and access-log middleware down to the Starlette app."""
    while not isinstance(app, Starlette):
        app = app.app
    return app


def rest_routes() -> set[str]:
    with tempfile.TemporaryDirectory() as tmp:
        server = local_server(ServerConfig(), Path(tmp))
        try:
            return {r.path for r in starlette_app(server.app).routes if isinstance(r, Route)}
        finally:
            server.manager.stop()


# ---- reading the Dockerfile ----------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """[(INSTRUCTION, arguments)] per build stage (the first holds the global ARGs before
    the first FROM), continuation lines joined, comments out."""
    stages: list[list[tuple[str, str]]] = [[]]
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instruction, _, rest = (pending + line).partition(" ")
        pending = ""
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, rest.strip()))
    return stages


def final_stage(instruction: str) -> list[str]:
    return [rest for name, rest in dockerfile_stages()[-1] if name == instruction]


def exec_form(instruction: str) -> list[str]:
    found = final_stage(instruction)
    assert len(found) == 1, f"expected one {instruction} in the final stage"
    value = json.loads(found[0])
    assert isinstance(value, list), f"{instruction} must be in exec form (a JSON list)"
    return value


def image_args() -> list[str]:
    """What the image runs: ENTRYPOINT ["tfllm-serve"] and its flags from CMD."""
    entrypoint = exec_form("ENTRYPOINT")
    assert entrypoint[0] == "tfllm-serve"
    return entrypoint[1:] + exec_form("CMD")


def healthcheck_url() -> str:
    (check,) = final_stage("HEALTHCHECK")
    _, _, command = check.partition("CMD ")
    code = " ".join(json.loads(command))
    match = re.search(r"https?://[^'\"\s]+", code)
    assert match, f"no URL in HEALTHCHECK {command}"
    return match.group(0)


def dockerignore_reincluded() -> set[str]:
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    return {line[1:].strip() for line in lines if line.startswith("!")}


# ---- the server's routes, ports and flags --------------------------------------------


def test_every_probe_path_is_a_real_route_of_the_server() -> None:
    routes = rest_routes()
    spec = container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert spec[probe]["httpGet"]["path"] in routes, probe
    annotations = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] in routes
    assert urlsplit(healthcheck_url()).path in routes


def test_readiness_is_readyz_and_liveness_is_healthz() -> None:
    spec = container()
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # workers accept only after their first scan: liveness waits for the startup probe
    assert spec["startupProbe"]["httpGet"]["path"] == "/healthz"
    startup = spec["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_container_args_parse_with_the_servers_own_cli(variant: str, tmp_path: Path) -> None:
    cfg = container_config(variant, tmp_path)
    assert cfg.host == "0.0.0.0", "inside a pod the server must listen beyond loopback"
    assert cfg.model_repo and cfg.grpc_port
    assert (cfg.auth_token_file is not None) == (variant == "auth")


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_container_ports_and_service_ports_agree_with_the_servers_ports(
    variant: str, tmp_path: Path
) -> None:
    cfg = container_config(variant, tmp_path)
    assert sorted(container_ports(variant).values()) == sorted({cfg.port, cfg.grpc_port})
    spec = container(variant)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert resolve_port(spec[probe]["httpGet"]["port"], variant) == cfg.port, probe
    annotations = one("Deployment", variant)["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == cfg.port
    for service in every("Service"):
        targets = {p["name"]: resolve_port(p["targetPort"], variant)
                   for p in service["spec"]["ports"]}
        name = service["metadata"]["name"]
        assert targets.get("grpc") == cfg.grpc_port, f"Service {name}: grpc -> {targets}"
        if "http" in targets:
            assert targets["http"] == cfg.port, f"Service {name}: http -> {targets}"
    main = one("Service", name="tfllm-serve")
    assert {p["name"]: p["port"] for p in main["spec"]["ports"]} == {
        "http": cfg.port, "grpc": cfg.grpc_port}


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_answer_without_a_token_and_the_api_needs_one_when_auth_is_on(
    variant: str, tmp_path: Path
) -> None:
    server = local_server(container_config(variant, tmp_path), tmp_path)
    try:
        client = TestClient(server.app)  # no `with`: the lifespan (polling, gRPC) stays off
        spec = container(variant)
        # The repository is empty, so /readyz says 503; what matters is that it is not 401.
        live = client.get(spec["livenessProbe"]["httpGet"]["path"])
        ready = client.get(spec["readinessProbe"]["httpGet"]["path"])
        assert live.status_code == 200
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert client.get(urlsplit(healthcheck_url()).path).status_code == 200
        api = client.get("/v1/models/sst2")
        assert api.status_code == (401 if variant == "auth" else 404)
    finally:
        server.manager.stop()


def test_the_metrics_path_serves_prometheus_text_without_auth(tmp_path: Path) -> None:
    server = local_server(container_config("default", tmp_path), tmp_path)
    try:
        path = one("Deployment")["spec"]["template"]["metadata"]["annotations"][
            "prometheus.io/path"]
        response = TestClient(server.app).get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
    finally:
        server.manager.stop()


def test_the_auth_token_file_is_on_a_secret_that_the_readme_creates() -> None:
    args = parse_server_args(container("auth")["args"])
    assert args.auth_token_file
    mount, volume = mounted_volume(args.auth_token_file, "auth")
    assert mount.get("readOnly") is True
    secret = volume["secret"]["secretName"]
    key = Path(args.auth_token_file).relative_to(mount["mountPath"]).as_posix()
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert f"kubectl create secret generic {secret} --from-file={key}=" in readme
    # Without the "#auth" lines the default Deployment starts with no Secret at all.
    assert "secret" not in json.dumps(pod_spec("default")["volumes"])


def test_the_configmap_loads_with_the_servers_config_loader_and_fits_the_cpu_limit(
    tmp_path: Path
) -> None:
    cfg = container_config("default", tmp_path)
    limits = container()["resources"]["limits"]
    # The server sizes threads by os.cpu_count() (the node's cores): the ConfigMap must
    # pin them to the pod's CPU limit.
    assert cfg.batching.num_batch_threads > 0 and cfg.runtime.intra_op_threads > 0
    assert cfg.batch_threads() * cfg.intra_op_threads() <= cpu_cores(limits["cpu"])
    for cm in every("ConfigMap"):
        for key, text in cm["data"].items():
            if key.endswith((".yaml", ".yml")):
                ServerConfig.from_dict(yaml.safe_load(text))


# ---- volumes, security, scaling, shutdown -------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_model_repository_is_mounted_read_only_from_the_claim(variant: str) -> None:
    args = parse_server_args(container(variant)["args"])
    mount, volume = mounted_volume(args.model_repo, variant)
    assert mount["mountPath"] == args.model_repo
    assert mount.get("readOnly") is True
    claim = volume["persistentVolumeClaim"]
    assert claim.get("readOnly") is True
    assert one("PersistentVolumeClaim", name=claim["claimName"])
    for other in container(variant)["volumeMounts"]:
        if other["name"] != "tmp":  # the one writable scratch folder
            assert other.get("readOnly") is True, other["name"]


def test_the_pod_runs_as_the_images_non_root_user_on_a_read_only_root() -> None:
    (user,) = final_stage("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid"
    pod = pod_spec()["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == int(uid)
    assert not gid or pod["runAsGroup"] == int(gid)
    box = container()["securityContext"]
    assert box["readOnlyRootFilesystem"] is True
    assert box["allowPrivilegeEscalation"] is False
    assert box["capabilities"]["drop"] == ["ALL"]


def test_the_service_and_budget_select_the_deployments_pods() -> None:
    deployment = one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selected = deployment["spec"]["selector"]["matchLabels"]
    assert selected.items() <= labels.items()
    for service in every("Service"):
        selector = service["spec"]["selector"]
        assert selector and selector.items() <= labels.items(), service["metadata"]["name"]
    for pdb in every("PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_autoscaler_targets_the_deployment_by_name_on_cpu() -> None:
    hpa = one("HorizontalPodAutoscaler")
    deployment = one("Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        deployment["apiVersion"], "Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] \
        <= hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["minReplicas"] >= 2, "one replica is no scale-out"
    # Utilization is a percent of the request: without a CPU request the HPA cannot work.
    assert cpu_cores(container()["resources"]["requests"]["cpu"]) > 0
    assert container()["resources"]["limits"]["memory"]


def _grpc_stop_grace() -> float:
    """`GrpcServer.stop`'s default grace, read from its source: importing the module would
    put its TF Serving protos into this process's descriptor pool, where TensorFlow (loaded
    by another test file of the same worker) may already hold the same names."""
    source = (Path(__file__).resolve().parents[2] / "serving" / "grpc_server.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == "stop":
            return float(ast.literal_eval(node.args.defaults[-1]))
    raise AssertionError("GrpcServer.stop not found")


def test_the_grace_period_covers_the_servers_own_shutdown(tmp_path: Path) -> None:
    server = local_server(container_config("default", tmp_path), tmp_path)
    try:
        drain = server.uvicorn_config().timeout_graceful_shutdown or 0
    finally:
        server.manager.stop()
    grpc_grace = _grpc_stop_grace()
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + drain + grpc_grace + 10, (
        f"{grace} s < preStop {pre_stop} + uvicorn drain {drain} + gRPC {grpc_grace} + margin")


def test_the_container_args_start_a_server_that_answers_probes_and_stops_on_sigterm(
    tmp_path: Path
) -> None:
    """The real `tfllm-serve` process with the container's args (local files for the pod's
    and free ports for its fixed ones): /healthz up, /readyz 503 on an empty repository,
    and SIGTERM ends it well within the grace period left after preStop."""
    args = localize(parse_server_args(container()["args"]), "default", tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    port, grpc_port = free_port(), free_port()
    while grpc_port == port:
        grpc_port = free_port()
    argv = ["--model-repo", str(models), "--host", args.host, "--port", str(port),
            "--grpc-port", str(grpc_port), "--config", args.config]
    spec = container()
    with ServerProcess(argv, port, tmp_path / "serve.log") as server:
        deadline = time.monotonic() + 60
        while True:
            assert server.proc.poll() is None, server.log(4000)
            try:
                with urllib.request.urlopen(
                        server.base + spec["livenessProbe"]["httpGet"]["path"], timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, server.log(4000)
                time.sleep(0.1)
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(server.base + spec["readinessProbe"]["httpGet"]["path"],
                                   timeout=5)
        assert not_ready.value.code == 503
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        budget = pod_spec()["terminationGracePeriodSeconds"] - float(
            spec["lifecycle"]["preStop"]["exec"]["command"][1])
        code = server.proc.wait(timeout=budget)
        assert code in (0, -signal.SIGTERM), server.log(4000)
        assert time.monotonic() - started < budget


# ---- the image ---------------------------------------------------------------------


def test_the_image_runs_the_servers_console_script_with_args_it_accepts() -> None:
    cfg = load_config(parse_server_args(image_args()))
    assert cfg.host == "0.0.0.0"
    exposed = {int(p.split("/")[0]) for rest in final_stage("EXPOSE") for p in rest.split()}
    assert exposed == {cfg.port, cfg.grpc_port}
    volumes = [v for rest in final_stage("VOLUME") for v in json.loads(rest)]
    assert cfg.model_repo in volumes
    url = urlsplit(healthcheck_url())
    assert url.hostname in ("127.0.0.1", "localhost") and url.port == cfg.port
    # `tfllm-serve` is setup.cfg's console script for the server's own main().
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    scripts = setup.get("options.entry_points", "console_scripts", fallback="")
    if not scripts:
        scripts = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r"tfllm-serve\s*=\s*['\"]?tfllm_serving\.cli:main", scripts)


def test_the_image_installs_only_the_serve_extra_which_has_no_tensorflow() -> None:
    installs = []
    for stage in dockerfile_stages():
        for name, rest in stage:
            if name == "RUN" and "pip install" in rest:
                installs.append(shlex.split(rest.split("pip install", 1)[1]))
    assert installs, "the Dockerfile installs nothing"
    for words in installs:
        packages = [w for w in words if not w.startswith("-")]
        assert packages == [".[serve]"], f"pip install {words}: only '.[serve]' belongs here"
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    lines = setup["options"]["install_requires"].splitlines()
    lines += setup["options.extras_require"]["serve"].splitlines()
    names = {Requirement(line).name.lower().replace("_", "-")
             for line in lines if line.strip() and not line.strip().startswith("#")}
    assert "onnxruntime" in names
    assert not names & TF_PACKAGES, f"the serve install pulls {names & TF_PACKAGES}"


def test_the_image_copies_everything_setup_cfg_needs_to_build() -> None:
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    needed = {"setup.cfg", "pyproject.toml"}
    needed |= {line.split("=")[1].strip()
               for line in setup["options"]["package_dir"].splitlines() if "=" in line}
    needed.add(setup["metadata"]["long_description"].removeprefix("file:").strip())
    copied = set()
    for stage in dockerfile_stages():
        for name, rest in stage:
            if name == "COPY" and not rest.startswith("--from"):
                *sources, _ = rest.split()
                copied |= {s.rstrip("/") for s in sources}
    assert needed <= copied, f"not copied into the build: {sorted(needed - copied)}"
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    assert copied <= dockerignore_reincluded(), "deploy/Dockerfile.dockerignore leaves out " \
        f"{sorted(copied - dockerignore_reincluded())}"


def test_every_stage_starts_from_slim_python_3_11() -> None:
    stages = dockerfile_stages()
    defaults = dict(rest.split("=", 1) for name, rest in stages[0] if name == "ARG")
    bases = []
    for stage in stages[1:]:
        image = stage[0][1].split()[0]
        bases.append(re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image))
    assert bases and set(bases) == {"python:3.11-slim"}, bases
