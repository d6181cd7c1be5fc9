"""Transport security and liveness of workers on real loopback servers: TLS, mutual TLS, tokens,
plain-text rules, deadlines and graceful drain."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pedsam.protos import pedsam_pb2 as pb
from pedsam.protos import pedsam_pb2_grpc as pb_grpc
from pedsam.stream.core.session import EdgeConfig
from pedsam.stream.errors import ConfigError, WorkerError
from pedsam.stream.fleet.links import PROFILES, LinkRelay
from pedsam.stream.fleet.remote import RemoteWorker
from pedsam.stream.fleet.transport import ANY_WORKER, ClientSecurity
from pedsam.workers import codec as wire
from pedsam.workers.certs import DemoPki, make_demo_pki
from pedsam.workers.security import SecurityError, ServerSecurity
from pedsam.workers.server import WorkerLimits, WorkerModel, WorkerServer
from tests.support import TINY

WINDOWS = [(14, 14), (4, 14)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPki:
    return make_demo_pki(tmp_path_factory.mktemp("pki"), ["localhost", "localhost"])


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPki:
    return make_demo_pki(tmp_path_factory.mktemp("other"), ["localhost"])


async def serve(model: WorkerModel, security: ServerSecurity, limits: WorkerLimits = WorkerLimits()) -> tuple[WorkerServer, str]:
    server = WorkerServer(model, limits, security)
    address = await server.start("127.0.0.1", 0)
    return server, address.replace("127.0.0.1", "localhost")  # the name in the certificates


async def round_trip(model: WorkerModel, address: str, security: ClientSecurity, **kwargs: Any) -> None:
    """Connect like the edge does and check one segment comes back exact."""
    client = RemoteWorker(address, fingerprint=model.fingerprint, security=security, connect_timeout=5, **kwargs)
    await client.connect()
    try:
        tokens = torch.randn(14 * 14 + 4 * 14, 64)
        got = await client.run(0, 1, tokens, WINDOWS)
        torch.testing.assert_close(got, model.runner.run(1, tokens, WINDOWS), rtol=0, atol=0)
    finally:
        await client.close()


@pytest.fixture
async def tls_worker(tiny_worker_model: WorkerModel, pki: DemoPki) -> AsyncIterator[str]:
    cert, key, token = pki.workers[0]
    server, address = await serve(
        tiny_worker_model,
        ServerSecurity.from_files(cert=str(cert), key=str(key), token_files=[str(token)]),
    )
    try:
        yield address
    finally:
        await server.stop(0)


async def test_tls_with_token_works(tiny_worker_model: WorkerModel, pki: DemoPki, tls_worker: str) -> None:
    token = pki.workers[0][2].read_text().strip()
    await round_trip(tiny_worker_model, tls_worker, ClientSecurity(ca=pki.ca.read_bytes(), tokens={tls_worker: token}))


async def test_tls_and_token_pass_through_an_emulated_link(tiny_worker_model: WorkerModel, tmp_path) -> None:
    """The edge dials the relay at 127.0.0.1 yet checks the worker's own name, ``localhost``: its
    certificate names only that (the demo PKI's also name 127.0.0.1, which would hide a mistake)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from pedsam.workers.certs import _key_pem, _sign

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _sign("test CA", ca_key, None, ca_key)
    cert = _sign("localhost only", key, ca, ca_key, hosts=["localhost"])
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(_key_pem(key))
    (tmp_path / "token").write_text("sesame\n")
    server, address = await serve(tiny_worker_model, ServerSecurity.from_files(
        cert=str(tmp_path / "cert.pem"), key=str(tmp_path / "key.pem"), token_files=[str(tmp_path / "token")]))
    security = ClientSecurity(ca=ca.public_bytes(serialization.Encoding.PEM), tokens={address: "sesame"})
    try:
        async with LinkRelay(address, PROFILES["wifi"]) as relay:
            await round_trip(tiny_worker_model, address, security, via=relay.address)
            assert relay.carried_up > 14 * 14 * 64 * 4  # the request went through the relay, encrypted
    finally:
        await server.stop(0)


async def test_wrong_ca_is_refused(tiny_worker_model: WorkerModel, pki: DemoPki, other_pki: DemoPki, tls_worker: str) -> None:
    token = pki.workers[0][2].read_text().strip()
    with pytest.raises(WorkerError, match="unreachable"):
        await round_trip(tiny_worker_model, tls_worker,
                         ClientSecurity(ca=other_pki.ca.read_bytes(), tokens={ANY_WORKER: token}))


async def test_plain_text_client_cannot_talk_to_a_tls_worker(tiny_worker_model: WorkerModel, tls_worker: str) -> None:
    with pytest.raises(WorkerError, match="unreachable"):
        await round_trip(tiny_worker_model, tls_worker, ClientSecurity(insecure=True))


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_missing_or_wrong_token_is_unauthenticated(
    tiny_worker_model: WorkerModel, pki: DemoPki, tls_worker: str, token: str | None
) -> None:
    tokens = {ANY_WORKER: token} if token else {}
    with pytest.raises(WorkerError, match="refused this edge's token"):
        await round_trip(tiny_worker_model, tls_worker, ClientSecurity(ca=pki.ca.read_bytes(), tokens=tokens))
    # The session stream is refused too, not only Describe; health stays open for probes.
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    async with grpc.aio.secure_channel(tls_worker, credentials) as channel:
        call = pb_grpc.WindowWorkerStub(channel).Process(metadata=(("authorization", "Bearer nope"),))
        await call.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_mutual_tls_requires_a_client_certificate(tiny_worker_model: WorkerModel, pki: DemoPki) -> None:
    cert, key, _ = pki.workers[1]
    server, address = await serve(
        tiny_worker_model, ServerSecurity.from_files(cert=str(cert), key=str(key), client_ca=str(pki.ca))
    )
    try:
        with pytest.raises(WorkerError, match="unreachable"):
            await round_trip(tiny_worker_model, address, ClientSecurity(ca=pki.ca.read_bytes()))
        await round_trip(tiny_worker_model, address, ClientSecurity(
            ca=pki.ca.read_bytes(), cert=pki.edge_cert.read_bytes(), key=pki.edge_key.read_bytes()))
    finally:
        await server.stop(0)


def test_plain_text_off_this_machine_needs_an_explicit_insecure() -> None:
    with pytest.raises(ConfigError, match="--insecure"):
        EdgeConfig(model=TINY, workers=("10.0.0.7:50051", "10.0.0.8:50051"))
    EdgeConfig(model=TINY, workers=("10.0.0.7:50051", "10.0.0.8:50051"), security=ClientSecurity(insecure=True),
               providers=(("10.0.0.7:50051", "provider-a"), ("10.0.0.8:50051", "provider-b")))
    EdgeConfig(model=TINY, workers=("127.0.0.1:1", "[::1]:2"))  # loopback never leaves the machine
    with pytest.raises(SecurityError, match="--insecure"):
        ServerSecurity()


async def test_worker_cli_refuses_plain_text_on_a_public_address(pki: DemoPki) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pedsam.stream", "worker", "--host", "0.0.0.0", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 2
    [line] = err.decode().splitlines()
    assert line.startswith("pedsam: error: no TLS certificate") and "--insecure" in line
    cert, key, token = pki.workers[0]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pedsam.stream", "worker", "--host", "127.0.0.1", "--port", "0", "--model", "tiny",
        "--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(pki.ca), "--token-file", str(token),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
        assert "(mutual TLS, bearer token required)" in line
        address = line.split()[4].replace("127.0.0.1", "localhost")
        await round_trip(WorkerModel(TINY), address, ClientSecurity.from_files(
            ca=str(pki.ca), cert=str(pki.edge_cert), key=str(pki.edge_key), token_file=str(token)))
    finally:
        process.terminate()
        await process.wait()


class _Stalling(WorkerModel):
    """A worker whose compute blocks until released: a hung server, seen from the edge."""

    def __init__(self, model: WorkerModel, release: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        self.__dict__.update(model.__dict__)
        runner, self.calls = model.runner, 0

        class Runner:
            num_segments = runner.num_segments

            def run(inner, segment: int, tokens: torch.Tensor, extents: list[tuple[int, int]]) -> torch.Tensor:
                self.calls += 1
                asyncio.run_coroutine_threadsafe(release.wait(), loop).result(30)
                return runner.run(segment, tokens, extents)

        self.runner = Runner()  # type: ignore[assignment]


async def test_a_worker_that_misses_its_deadline_fails_fast(tiny_worker_model: WorkerModel) -> None:
    release = asyncio.Event()
    stalling = _Stalling(tiny_worker_model, release, asyncio.get_running_loop())
    server, address = await serve(stalling, ServerSecurity(insecure=True))
    try:
        client = RemoteWorker(address, fingerprint=tiny_worker_model.fingerprint, request_timeout=0.5)
        await client.connect()
        started = time.monotonic()
        with pytest.raises(WorkerError, match="missed its deadline"):
            await client.run(3, 0, torch.randn(196, 64), [(14, 14)])
        assert time.monotonic() - started < 5
        assert client.failed is not None
        with pytest.raises(WorkerError, match="missed its deadline"):  # it stays failed
            await client.run(4, 0, torch.randn(196, 64), [(14, 14)])
        await client.close()
    finally:
        release.set()
        await server.stop(0)


async def test_shutdown_drains_accepted_work_then_ends_streams(tiny_worker_model: WorkerModel) -> None:
    release = asyncio.Event()
    stalling = _Stalling(tiny_worker_model, release, asyncio.get_running_loop())
    server, address = await serve(stalling, ServerSecurity(insecure=True))
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.WindowWorkerStub(channel).Process()
        tokens = torch.randn(196, 64)
        await call.write(pb.SegmentRequest(
            request_id=1, frame_id=0, segment=0, model_fingerprint=tiny_worker_model.fingerprint,
            extents=[pb.WindowExtent(height=14, width=14)], tokens=wire.encode(tokens, pb.CODEC_FP32)))
        while stalling.calls == 0:
            await asyncio.sleep(0.01)
        stopping = asyncio.create_task(server.stop(grace=20))
        await asyncio.sleep(0.2)
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        release.set()
        result = await call.read()  # the accepted request is still answered, exactly
        torch.testing.assert_close(wire.decode(result.tokens), tiny_worker_model.runner.run(0, tokens, [(14, 14)]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (caught.value.details() or "")
        await stopping
