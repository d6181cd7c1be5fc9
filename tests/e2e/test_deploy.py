"""Containers, compose and Kubernetes manifests: they parse, agree with the worker CLI, and the
exact commands they run work when run directly (there is no container engine here)."""

from __future__ import annotations

import asyncio
import copy
import shlex
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import torch
import yaml
from dockerfile_parse import DockerfileParser

from pedsam.stream.cli.main import parse
from pedsam.stream.cli.settings import addresses
from pedsam.stream.fleet.remote import RemoteWorker
from pedsam.stream.fleet.transport import ClientSecurity
from pedsam.workers.certs import make_demo_pki
from pedsam.workers.models import build_sam, fingerprint, get_preset
from tests.support import ROOT

K8S_VERSION = "1.31"


def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return parser


def instructions(stage: str) -> list[dict[str, Any]]:
    """The instructions of one build stage, in order."""
    found: list[dict[str, Any]] = []
    current = None
    for item in dockerfile().structure:
        if item["instruction"] == "FROM":
            current = item["value"].split()[-1]
        elif current == stage:
            found.append(item)
    return found


def exec_form(stage: str, name: str) -> list[str]:
    [item] = [i for i in instructions(stage) if i["instruction"] == name]
    return list(yaml.safe_load(item["value"]))  # exec form is a JSON array


def worker_args(argv: list[str]) -> Any:
    return parse(["worker", *argv])[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_dockerfile_stages_user_and_variants() -> None:
    froms = [i["value"].split() for i in dockerfile().structure if i["instruction"] == "FROM"]
    assert [f[-1] for f in froms] == ["build", "runtime", "edge", "worker"]  # worker is the default target
    build_args = [i["value"] for i in instructions("build") if i["instruction"] == "ARG"]
    assert any(a.startswith("TORCH_INDEX=https://download.pytorch.org/whl/cpu") for a in build_args)
    runtime = instructions("runtime")
    user = next(i["value"] for i in runtime if i["instruction"] == "USER")
    assert user.split(":")[0] != "0" and int(user.split(":")[0]) >= 1000
    install = next(i["value"] for i in instructions("build") if i["instruction"] == "RUN")
    assert "-c constraints.txt" in install  # pinned versions, reproducible
    health = next(i["value"] for i in instructions("worker") if i["instruction"] == "HEALTHCHECK")
    assert '"pedsam", "health", "127.0.0.1:8081"' in health


def test_worker_image_command_runs_as_written(tmp_path: Path) -> None:
    """Run ENTRYPOINT + CMD of the worker image, with its mounts as folders and its ports free."""
    command = exec_form("worker", "ENTRYPOINT") + exec_form("worker", "CMD")
    assert command[:2] == ["pedsam", "worker"]
    args = worker_args(command[2:])
    assert (args["port"], args["health_port"], args["metrics_port"]) == (50051, 8081, 9100)
    assert {"50051", "8081", "9100"} <= set(
        " ".join(i["value"] for i in instructions("worker") if i["instruction"] == "EXPOSE").split())

    pki = make_demo_pki(tmp_path / "pki", ["localhost"])
    cert, key, token = pki.workers[0]
    mounts = {"/tls/tls.crt": cert, "/tls/tls.key": key, "/tls/ca.crt": pki.ca, "/secrets/token": token}
    checkpoint = tmp_path / "weights" / Path(args["checkpoint"]).name
    checkpoint.parent.mkdir()
    sam = build_sam(args["model"], seed=7)
    torch.save(sam.state_dict(), checkpoint)
    mounts[args["checkpoint"]] = checkpoint
    ports = {"50051": str(free_port()), "8081": str(free_port()), "9100": str(free_port())}
    argv = [str(mounts.get(a, ports.get(a, a))) for a in command[2:]]
    asyncio.run(_run_worker(argv, ports, pki, token, fingerprint(sam, get_preset(args["model"]))))


async def _run_worker(argv: list[str], ports: dict[str, str], pki: Any, token: Path, expected: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pedsam.stream", "worker", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 300)).decode()
        assert "mutual TLS, bearer token required" in line, line
        # The image's HEALTHCHECK command, against the health port.
        health = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pedsam.stream", "health", f"127.0.0.1:{ports['8081']}", stdout=asyncio.subprocess.PIPE)
        out, _ = await health.communicate()
        assert health.returncode == 0 and b"SERVING" in out
        client = RemoteWorker(
            f"localhost:{ports['50051']}", fingerprint=expected, connect_timeout=10,
            security=ClientSecurity.from_files(ca=str(pki.ca), cert=str(pki.edge_cert), key=str(pki.edge_key),
                                               token_file=str(token)),
        )
        info = await client.connect()
        assert info.preset == "vit_b" and not info.random_weights  # weights came from the mounted file
        await client.close()
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{ports['9100']}/metrics", timeout=10).read().decode())
        assert 'pedsam_worker_info{fingerprint="' + expected[:12] in text
        assert "pedsam_worker_streams" in text
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 60)
    assert process.returncode == 0  # SIGTERM drains and exits cleanly


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_services_agree_with_the_cli_and_the_certs_they_use(tmp_path: Path) -> None:
    services = compose()["services"]
    assert set(services) == {"certs", "worker-a", "worker-b", "worker-c", "edge"}
    certs_command = services["certs"]["command"][0].split("&&")[0]
    argv = shlex.split(certs_command)
    assert argv[:2] == ["pedsam", "certs"]
    hosts = argv[argv.index("--hosts") + 1].split(",")
    # Run the certs step for real and check every file the workers and the edge name exists.
    made = tmp_path / "tls"
    assert parse(["certs", str(made), *argv[3:]])[1]["hosts"] == ",".join(hosts)
    make_demo_pki(made, hosts, port=int(argv[argv.index("--port") + 1]))
    files: set[str] = set()
    for index, name in enumerate(["worker-a", "worker-b", "worker-c"]):
        service = services[name]
        assert name in hosts
        args = worker_args(service["command"])
        assert args["host"] == "0.0.0.0" and args["tls_client_ca"] and args["token_files"]
        assert args["tls_cert"] == f"/tls/worker-{index}.pem" and args["token_files"] == [f"/tls/worker-{index}.token"]
        files.update([args["tls_cert"], args["tls_key"], args["tls_client_ca"], *args["token_files"]])
        assert service["healthcheck"]["test"][1:3] == ["pedsam", "health"]
    edge = shlex.split(services["edge"]["command"][0].split("&&")[1])
    assert edge[:2] == ["pedsam", "run"]
    run = parse(edge[1:])[1]
    # Every worker names its provider (in a real deployment, each its own; here one machine plays three).
    assert run["workers"] == ",".join(f"{h}:50051@provider-{h[-1]}" for h in hosts)
    assert addresses(run["workers"]) == tuple(f"{h}:50051" for h in hosts)
    files.update([run["tls_ca"], run["tls_cert"], run["tls_key"], run["token_file"]])
    for path in files:
        assert (made / Path(path).name).is_file(), path
    tokens = (made / "edge-tokens").read_text().split()
    assert tuple(tokens[0::2]) == addresses(run["workers"])


def manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "worker.yaml").read_text()) if d]


def test_kubernetes_manifests_are_valid_against_the_schema() -> None:
    docs = manifests()
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "Namespace", "NetworkPolicy"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    broken = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kubernetes_worker_agrees_with_the_worker_cli() -> None:
    deployment = next(d for d in manifests() if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = worker_args(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"windows": args["port"], "health": args["health_port"], "metrics": args["metrics_port"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == args["health_port"]  # native gRPC probes, plain text
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["terminationGracePeriodSeconds"] > args["grace"]  # drain finishes before SIGKILL
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in (args["tls_cert"], args["tls_key"], args["tls_client_ca"], *args["token_files"], args["checkpoint"]):
        folder = str(Path(path).parent)
        assert folder in mounts, path
    assert volumes[mounts["/tls"]]["secret"]["secretName"] == "pedsam-worker-tls"
    assert volumes[mounts["/secrets"]]["secret"]["secretName"] == "pedsam-worker-token"
    service = next(d for d in manifests() if d["kind"] == "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["windows"]  # health and metrics stay inside
