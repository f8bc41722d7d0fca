"""Secure channels on every hop (SPEC 2, last bullet; 4.1), with certificates the tests make and
real handshakes: north and south over HTTPS and mutual TLS, pushes to devices over TLS, and the
worker and the API reaching Temporal over mutual TLS through a TLS-terminating proxy."""

from __future__ import annotations

import contextlib
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.server import TLSSettingsError, server_config, ssl_context
from core.settings import Settings
from core.tls import fingerprint, pem_to_der, server_context
from inventory.keys import new_key
from simulator.app import create_app as create_simulator
from simulator.fleet import Behaviour, Fleet, Mode
from tests.stack import eventually, serve, serve_config
from tests.tls_support import (
    Authority,
    Issued,
    client_tls,
    grpc_server_context,
    tls_config,
    tls_proxy,
)
from worker import running_worker

JOBS = "/north/v80/operation/jobs"
REBOOT = "REBOOT_EQUIPMENT"


def south(device_id: str, what: str) -> str:
    return f"/south/v80/devices/{device_id}/operation/{what}"


def final_answer(operation_id: str, device_id: str) -> dict[str, Any]:
    return {
        "version": "1.0",
        "operation": {
            "response": {
                "id": operation_id,
                "deviceId": device_id,
                "name": REBOOT,
                "timestamp": 1763800001000,
                "resultCode": "SUCCESSFUL",
                "steps": [],
            }
        },
    }


@dataclass
class Pki:
    platform: Authority  # the API's server certificate, and the platform's client certificate
    devices: Authority  # device client certificates, and the devices' own servers
    fleet: Authority  # certificates that stand for the whole fleet
    rogue: Authority  # nobody trusts it


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    return Pki(*(Authority(root, n) for n in ("platform", "devices", "fleet", "rogue")))


@dataclass
class TlsStack:
    settings: Settings
    pki: Pki
    api_url: str
    admin_key: str
    admin_cert: Issued
    fleet: Fleet  # the devices served over TLS with a certificate the platform trusts
    sim_url: str
    untrusted: Fleet  # devices whose certificate comes from a CA the platform does not trust
    untrusted_url: str

    def client(self, cert: Issued | None, key: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_url,
            verify=client_tls(self.pki.platform, cert),
            headers={"X-ApiKey": key} if key else {},
            timeout=60,
        )

    def admin(self) -> httpx.AsyncClient:
        return self.client(self.admin_cert, self.admin_key)

    async def provision(self, ids: list[str], address: str | None) -> None:
        async with self.admin() as api:
            body = [{"id": i, "address": address} for i in ids]
            answer = await api.post("/north/v80/provision/devices/bulk", json=body)
            assert answer.status_code == 201, answer.text

    async def job(self, api: httpx.AsyncClient, devices: list[str]) -> dict[str, Any]:
        request = {"name": REBOOT, "target": {"append": {"entities": devices}}}
        answer = await api.post(JOBS, json={"job": {"request": request}})
        assert answer.status_code == 201, answer.text
        return answer.json()

    async def operations(self, job_id: str) -> dict[str, dict[str, Any]]:
        async with self.admin() as api:
            answer = await api.get(f"{JOBS}/{job_id}/operations")
        assert answer.status_code == 200, answer.text
        return {op["entityId"]: op for op in answer.json()["operations"]}


@contextlib.asynccontextmanager
async def device_servers(pki: Pki) -> AsyncIterator[tuple[Fleet, str, Fleet, str]]:
    """Two simulated fleets over TLS, each requiring the platform's client certificate: one with
    a certificate of the device CA (trusted), one with a rogue certificate."""
    trusted, untrusted = Fleet(), Fleet()
    good, bad = pki.devices.server("devices-server"), pki.rogue.server("rogue-server")
    async with (
        serve_config(
            tls_config(
                create_simulator(trusted),
                server_context(good.cert, good.key, [pki.platform.cert], "required"),
            ),
            "https",
        ) as sim_url,
        serve_config(
            tls_config(
                create_simulator(untrusted),
                server_context(bad.cert, bad.key, [pki.platform.cert], "required"),
            ),
            "https",
        ) as untrusted_url,
        contextlib.aclosing(trusted),
        contextlib.aclosing(untrusted),
    ):
        yield trusted, sim_url, untrusted, untrusted_url


@pytest_asyncio.fixture(loop_scope="session")
async def tls(env: WorkflowEnvironment, tmp_path: Path, pki: Pki) -> AsyncIterator[TlsStack]:
    _, admin_key, _ = new_key()
    api_cert = pki.platform.server("api")
    platform_client = pki.platform.client("platform")
    settings = Settings(
        _env_file=None,
        temporal_address=env.client.service_client.config.target_host,
        task_queue=f"tq-{uuid.uuid4()}",
        bootstrap_admin_key=admin_key,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}",
        tls_cert_file=api_cert.cert,
        tls_key_file=api_cert.key,
        tls_client_ca_file=pki.devices.cert,
        tls_client_cert="required",
        tls_fleet_ca_file=pki.fleet.cert,
        device_ca_file=pki.devices.cert,
        device_client_cert_file=platform_client.cert,
        device_client_key_file=platform_client.key,
    )
    app = create_app(settings, temporal_client=env.client)
    config = server_config(
        app, settings, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=2
    )
    async with (
        device_servers(pki) as (fleet, sim_url, untrusted, untrusted_url),
        running_worker(settings, client=env.client),
        serve_config(config, "https") as api_url,
    ):
        yield TlsStack(
            settings,
            pki,
            api_url,
            admin_key,
            pki.devices.client("admin-tool"),
            fleet,
            sim_url,
            untrusted,
            untrusted_url,
        )


# --- north and south over HTTPS, mutual TLS ---------------------------------------------------


async def test_north_over_https_and_plain_http_refused(tls: TlsStack) -> None:
    await tls.provision(["h-1"], None)
    async with tls.admin() as api:
        created = await tls.job(api, ["h-1"])
        answer = await api.get(f"{JOBS}/{created['id']}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["request"]["name"] == REBOOT
        await api.delete(f"{JOBS}/{created['id']}")
    plain = tls.api_url.replace("https://", "http://")
    async with httpx.AsyncClient(timeout=10) as http:
        with pytest.raises(httpx.TransportError):
            await http.get(f"{plain}/health/ready")


async def test_required_client_certificate_and_unknown_ca_refused(tls: TlsStack) -> None:
    for cert in (None, tls.pki.rogue.client("intruder")):
        async with tls.client(cert, tls.admin_key) as api:
            with pytest.raises(httpx.TransportError):
                await api.get("/north/v80/apiKeys")
    # The key alone is not enough either way: a valid certificate and the key pass.
    async with tls.admin() as api:
        assert (await api.get("/north/v80/apiKeys")).status_code == 200


async def test_device_certificate_acts_for_its_device_only(tls: TlsStack) -> None:
    await tls.provision(["cert-a", "cert-b"], None)  # no address: they poll
    async with tls.admin() as api:
        job = await tls.job(api, ["cert-a", "cert-b"])

    async def waiting() -> dict[str, dict[str, Any]]:
        operations = await tls.operations(job["id"])
        assert {op["status"] for op in operations.values()} == {"WAITING_FOR_CONNECTION"}
        return operations

    operations = await eventually(waiting)
    op_b = operations["cert-b"]["operationId"]
    async with tls.client(tls.pki.devices.client("cert-a")) as device_a:
        # With the certificate alone (no X-ApiKey): the pending poll hands out A's operation.
        pending = await device_a.get(south("cert-a", "pending"))
        assert pending.status_code == 200, pending.text
        [request] = [entry["operation"]["request"] for entry in pending.json()["operations"]]
        assert request["deviceId"] == "cert-a"
        # Acting for B: 403, on B's path and with B's operation on A's path.
        assert (await device_a.get(south("cert-b", "pending"))).status_code == 403
        for path_device in ("cert-b", "cert-a"):
            refused = await device_a.post(
                south(path_device, "response"), json=final_answer(op_b, path_device)
            )
            assert refused.status_code in (400, 403), refused.text
        answered = await device_a.post(
            south("cert-a", "response"), json=final_answer(request["id"], "cert-a")
        )
        assert answered.status_code == 200, answered.text
        # North is not a device's: 403.
        assert (await device_a.get(JOBS)).status_code == 403

    async def a_finished() -> dict[str, dict[str, Any]]:
        found = await tls.operations(job["id"])
        assert found["cert-a"]["status"] == "FINISHED", found["cert-a"]
        return found

    after = await eventually(a_finished)
    assert after["cert-a"]["result"] == "SUCCESSFUL"
    # B is unchanged: still waiting, nothing recorded.
    assert after["cert-b"]["status"] == "WAITING_FOR_CONNECTION"
    assert after["cert-b"].get("result") is None
    assert not after["cert-b"].get("steps")
    # A certificate naming a device nobody provisioned names nobody: 401.
    async with tls.client(tls.pki.devices.client("cert-nobody")) as nobody:
        assert (await nobody.get(south("cert-nobody", "pending"))).status_code == 401
    async with tls.admin() as api:
        await api.delete(f"{JOBS}/{job['id']}")


async def test_fleet_certificate_acts_for_any_device(tls: TlsStack) -> None:
    await tls.provision(["fleet-1", "fleet-2"], None)
    async with tls.admin() as api:
        job = await tls.job(api, ["fleet-1", "fleet-2"])
    await eventually(
        lambda: _all_waiting(tls, job["id"], 2),
    )
    async with tls.client(tls.pki.fleet.client("gateway-fleet")) as fleet:
        for device in ("fleet-1", "fleet-2"):
            pending = await fleet.get(south(device, "pending"))
            assert pending.status_code == 200, pending.text
            [entry] = pending.json()["operations"]
            operation_id = entry["operation"]["request"]["id"]
            answered = await fleet.post(
                south(device, "response"), json=final_answer(operation_id, device)
            )
            assert answered.status_code == 200, answered.text
        assert (await fleet.get(JOBS)).status_code == 403
    async with tls.admin() as api:
        done = await _finished(api, job["id"])
    assert done["report"]["summary"]["finished"]["successful"] == 2


async def test_north_certificate_bound_to_a_key(tls: TlsStack) -> None:
    service = tls.pki.devices.client("ci-service")
    async with tls.admin() as api:
        key = (await api.post("/north/v80/apiKeys", json={"name": "ci", "role": "operator"})).json()
        viewer = (await api.post("/north/v80/apiKeys", json={"name": "v", "role": "viewer"})).json()
        bound = await api.post(
            f"/north/v80/apiKeys/{key['id']}/certificates", json={"certificate": service.pem}
        )
        assert bound.status_code == 201, bound.text
        assert bound.json()["fingerprint"] == fingerprint(pem_to_der(service.pem))
        listed = await api.get(f"/north/v80/apiKeys/{key['id']}/certificates")
        assert [c["fingerprint"] for c in listed.json()["certificates"]] == [
            bound.json()["fingerprint"]
        ]
        bad = await api.post(
            f"/north/v80/apiKeys/{key['id']}/certificates", json={"certificate": "nonsense"}
        )
        assert bad.status_code == 400
    await tls.provision(["north-cert-1"], None)
    async with tls.client(service) as ci:  # the certificate alone
        job = await tls.job(ci, ["north-cert-1"])
        assert job["request"]["user"] == "ci"
        assert (await ci.get("/north/v80/apiKeys")).status_code == 403  # an operator's rights
        assert (await ci.delete(f"{JOBS}/{job['id']}")).status_code == 200
    reader = tls.pki.devices.client("ro-service")
    async with tls.admin() as api:
        await api.post(
            f"/north/v80/apiKeys/{viewer['id']}/certificates", json={"certificate": reader.pem}
        )
    async with tls.client(reader) as ro:
        assert (await ro.get(JOBS)).status_code == 200
        request = {"name": REBOOT, "target": {"append": {"entities": ["north-cert-1"]}}}
        assert (await ro.post(JOBS, json={"job": {"request": request}})).status_code == 403
    # Unbound (or its key revoked): the certificate names nobody any more.
    async with tls.admin() as api:
        unbind = await api.delete(
            f"/north/v80/apiKeys/{key['id']}/certificates/{bound.json()['fingerprint']}"
        )
        assert unbind.status_code == 200, unbind.text
    async with tls.client(service) as ci:
        assert (await ci.get(JOBS)).status_code == 401


# --- device push over TLS ---------------------------------------------------------------------


async def test_job_pushed_to_devices_over_tls_finishes(tls: TlsStack) -> None:
    ids = [f"tls-dev-{i}" for i in range(1, 6)]
    tls.fleet.device_ids.update(ids)
    # The last device answers later through the south API, as the simulator's devices do with a
    # fleet certificate (``--client-cert``): no key at all.
    tls.fleet.behaviours[ids[-1]] = Behaviour(mode=Mode.ASYNC, step_interval_ms=10)
    tls.fleet.platform_url = tls.api_url
    tls.fleet.platform_tls = client_tls(tls.pki.platform, tls.pki.fleet.client("sim-fleet"))
    await tls.provision(ids, tls.sim_url)
    async with tls.admin() as api:
        job = await tls.job(api, ids)
        done = await _finished(api, job["id"])
    assert done["report"]["summary"]["finished"]["successful"] == len(ids)
    assert sorted(d.device_id for d in tls.fleet.deliveries) == ids
    assert not tls.fleet.keys and tls.fleet.answers_sent >= 1


async def test_untrusted_device_certificate_never_gets_the_request(tls: TlsStack) -> None:
    tls.untrusted.device_ids.add("rogue-dev")
    await tls.provision(["rogue-dev"], tls.untrusted_url)
    async with tls.admin() as api:
        job = await tls.job(api, ["rogue-dev"])

    async def says_why() -> dict[str, Any]:
        operation = (await tls.operations(job["id"])).get("rogue-dev") or {}
        assert operation.get("status") == "WAITING_FOR_CONNECTION", operation
        assert "certificate does not verify" in (operation.get("description") or ""), operation
        return operation

    operation = await eventually(says_why)
    assert "waiting for the device to connect" in operation["description"]
    assert tls.untrusted.deliveries == []
    async with tls.admin() as api:
        await api.delete(f"{JOBS}/{job['id']}")


async def _all_waiting(tls: TlsStack, job_id: str, count: int) -> None:
    operations = await tls.operations(job_id)
    assert len(operations) == count
    assert {op["status"] for op in operations.values()} == {"WAITING_FOR_CONNECTION"}


async def _finished(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    async def finished() -> dict[str, Any]:
        job = (await api.get(f"{JOBS}/{job_id}")).json()
        assert job["report"]["summary"]["status"] == "FINISHED", job["report"]["summary"]
        return job

    return await eventually(finished, timeout=60, interval=0.3)


# --- Temporal over mutual TLS -----------------------------------------------------------------


async def test_worker_and_api_reach_temporal_over_mutual_tls(
    env: WorkflowEnvironment, tmp_path: Path, pki: Pki
) -> None:
    temporal_ca = Authority(tmp_path, "temporal")
    clients_ca = Authority(tmp_path, "temporal-clients")
    proxy_cert = temporal_ca.server("temporal-frontend")
    fleet_client = clients_ca.client("fleet-services")
    host, port = env.client.service_client.config.target_host.rsplit(":", 1)
    async with tls_proxy(host, int(port), grpc_server_context(proxy_cert, clients_ca)) as proxy:
        address = f"{proxy[0]}:{proxy[1]}"
        _, admin_key, _ = new_key()
        settings = Settings(
            _env_file=None,
            temporal_address=address,
            temporal_tls_ca_file=temporal_ca.cert,
            temporal_tls_cert_file=fleet_client.cert,
            temporal_tls_key_file=fleet_client.key,
            temporal_tls_server_name="localhost",
            task_queue=f"tq-{uuid.uuid4()}",
            bootstrap_admin_key=admin_key,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}",
        )
        fleet = Fleet(device_ids={"mtls-1", "mtls-2"})
        async with (
            serve(create_simulator(fleet)) as sim_url,
            running_worker(settings) as worker,  # connects by itself: through the proxy
            serve(create_app(settings)) as api_url,  # so does the API
            httpx.AsyncClient(base_url=api_url, headers={"X-ApiKey": admin_key}) as api,
        ):
            assert worker.client.service_client.config.target_host == address
            body = [{"id": d, "address": sim_url} for d in sorted(fleet.device_ids)]
            assert (await api.post("/north/v80/provision/devices/bulk", json=body)).is_success
            request = {"name": REBOOT, "target": {"append": {"entities": sorted(fleet.device_ids)}}}
            created = await api.post(JOBS, json={"job": {"request": request}})
            assert created.status_code == 201, created.text
            done = await _finished(api, created.json()["id"])
            assert done["report"]["summary"]["finished"]["successful"] == 2
        # Without the client certificate the proxy refuses the handshake.
        with pytest.raises(RuntimeError, match="Failed client connect"):
            await Client.connect(
                address,
                tls=TLSConfig(
                    server_root_ca_cert=temporal_ca.ca.cert_pem.bytes(), domain="localhost"
                ),
                retry_config=None,
            )


def test_tls_settings_that_cannot_hold_are_refused(pki: Pki) -> None:
    api = pki.platform.server("api-settings")
    wrongs: tuple[dict[str, str], ...] = (
        {"tls_cert_file": api.cert},  # no key
        {"tls_client_ca_file": pki.devices.cert},  # client certificates over plain HTTP
        {"tls_cert_file": api.cert, "tls_key_file": api.key, "tls_client_cert": "required"},
    )
    for wrong in wrongs:
        with pytest.raises(TLSSettingsError):
            ssl_context(Settings.model_validate(wrong))
    assert ssl_context(Settings(_env_file=None)) is None
    served = ssl_context(Settings(_env_file=None, tls_cert_file=api.cert, tls_key_file=api.key))
    assert served is not None and served.verify_mode == ssl.CERT_NONE


async def test_optional_client_certificates_keys_still_work(
    env: WorkflowEnvironment, tmp_path: Path, pki: Pki
) -> None:
    _, admin_key, _ = new_key()
    api_cert = pki.platform.server("api-optional")
    settings = Settings(
        _env_file=None,
        temporal_address=env.client.service_client.config.target_host,
        bootstrap_admin_key=admin_key,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}",
        tls_cert_file=api_cert.cert,
        tls_key_file=api_cert.key,
        tls_client_ca_file=pki.devices.cert,
        tls_client_cert="optional",
    )
    app = create_app(settings, temporal_client=env.client)
    config = server_config(app, settings, host="127.0.0.1", port=0, log_level="warning")
    verify = client_tls(pki.platform)
    async with serve_config(config, "https") as url:
        async with httpx.AsyncClient(base_url=url, verify=verify) as anonymous:
            assert (await anonymous.get("/health/ready")).status_code == 200
            assert (await anonymous.get(JOBS)).status_code == 401
            admin = await anonymous.get(JOBS, headers={"X-ApiKey": admin_key})
            assert admin.status_code == 200, admin.text
            provisioned = await anonymous.post(
                "/north/v80/provision/devices",
                json={"id": "opt-1"},
                headers={"X-ApiKey": admin_key},
            )
            assert provisioned.status_code == 201, provisioned.text
        device = client_tls(pki.platform, pki.devices.client("opt-1"))
        async with httpx.AsyncClient(base_url=url, verify=device) as opt_1:
            assert (await opt_1.get(south("opt-1", "pending"))).json() == {"operations": []}
            # A key, when sent, decides: a wrong one is 401 whatever the certificate.
            wrong = await opt_1.get(south("opt-1", "pending"), headers={"X-ApiKey": "x.y"})
            assert wrong.status_code == 401
