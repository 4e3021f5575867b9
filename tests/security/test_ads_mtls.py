"""ADS over mTLS: Envoy from `xdsctl bootstrap --xds-*` connects; plaintext, certless and impostor clients do not."""
from __future__ import annotations

import json

import grpc
import pytest

from harness.envoy import EnvoyProc
from harness.procs import free_port, wait_until
from tests.xds_server.xds_client import CDS, XdsClient
from tools.tls_backend import ensure_certs

pytestmark = [pytest.mark.timeout(90)]


@pytest.fixture
def secure_ads(tmp_path, redis_server, procs):
    certs = tmp_path / "certs"
    server = ensure_certs(certs, "xds.internal")
    builders = tmp_path / "b.json"
    builders.write_text(json.dumps([{"id": "a0000000000001", "app": "builder", "region": "ord", "ip": "127.0.0.2"}]))
    procs.start("discoverer", ["--redis-url", redis_server.url, "--source", "file", "--file", str(builders)])
    port = free_port()
    xds = procs.start("xds-server", ["--redis-url", redis_server.url, "--listen", f"127.0.0.1:{port}",
                               "--tls-cert", str(server.cert), "--tls-key", str(server.key),
                               "--client-ca", str(server.ca), "--require-node-identity", "--replica-id", "r1"])
    wait_until(lambda: redis_server.client().hlen("{xds}:routes") == 1, 10)
    xds.wait_for_log("ready: version", 20)
    wait_until(lambda: '"version":1' in (redis_server.client().hget("{xds}:replicas", "r1") or b"").decode(), 10,
               what="the replica at version 1")
    return {"certs": certs, "port": port, "ca": server.ca}


def channel(ads, client_name: str | None) -> grpc.aio.Channel:
    key = cert = None
    if client_name:
        c = ensure_certs(ads["certs"], client_name, client=True)
        key, cert = c.key.read_bytes(), c.cert.read_bytes()
    creds = grpc.ssl_channel_credentials(ads["ca"].read_bytes(), key, cert)
    return grpc.aio.secure_channel(f"127.0.0.1:{ads['port']}", creds,
                                   options=[("grpc.ssl_target_name_override", "xds.internal")])


def test_envoy_connects_over_mtls(tmp_path, secure_ads, procs):
    c = ensure_certs(secure_ads["certs"], "edge-1", client=True)
    envoy = EnvoyProc(tmp_path / "envoy", node_id="edge-1", ads=f"127.0.0.1:{secure_ads['port']}",
                      extra_bootstrap=["--xds-ca", str(c.ca), "--xds-cert", str(c.cert), "--xds-key", str(c.key),
                                       "--xds-sni", "xds.internal"])
    procs.procs.append(envoy.start().proc)
    wait_until(lambda: envoy.clusters() == {"a0000000000001.builders.internal"}, 15, what="clusters over mTLS")


async def test_a_client_cert_for_another_node_is_refused(secure_ads):
    async with XdsClient("", node_id="edge-2", channel=channel(secure_ads, "edge-1")) as client:
        ads = await client.sotw()
        await ads.request(CDS)
        end = await ads.wait_end(5)
    assert end.code == grpc.StatusCode.PERMISSION_DENIED, end


async def test_the_right_identity_is_served(secure_ads):
    async with XdsClient("", node_id="edge-1", channel=channel(secure_ads, "edge-1")) as client:
        ads = await client.sotw()
        await ads.request(CDS)
        resp = await ads.recv(CDS, timeout=5)
    assert ads.names(resp) == ["a0000000000001.builders.internal"]


@pytest.mark.parametrize("kind", ["plaintext", "no client certificate"])
async def test_plaintext_and_certless_clients_get_nothing(secure_ads, kind):
    chan = (grpc.aio.insecure_channel(f"127.0.0.1:{secure_ads['port']}") if kind == "plaintext"
            else channel(secure_ads, None))
    async with XdsClient("", node_id="edge-1", channel=chan) as client:
        ads = await client.sotw()
        try:
            await ads.request(CDS)
            code = (await ads.wait_end(5)).code
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
    assert code == grpc.StatusCode.UNAVAILABLE
