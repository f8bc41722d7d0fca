"""The inventory on a real PostgreSQL (the deployment shape of docker-compose): the same pages in
the same order as on SQLite, and a job end to end with its targets read from PostgreSQL.

Each run gets a database of its own, dropped afterwards. Under ``CI=true`` these tests must run:
a missing server is a failure, not a skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from inventory.store import Inventory
from models.devices import DeviceIn, DeviceUpdate
from models.enums import Role
from tests.stack import running_stack
from tests.test_continuous import check_joins

SERVER = os.environ.get("FLEET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
# Ids whose byte order differs from a locale's order (case, punctuation, digits).
IDS = ["dev-B", "dev-a", "Dev-c", "dev_1", "dev.2", "dev-10", "dev-9", "DEV-z", "dev:3", "d@x"]


@pytest_asyncio.fixture(loop_scope="session")
async def postgres_url() -> AsyncIterator[str]:
    name = f"fleet_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(f"{SERVER}/postgres", timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL must run in CI and did not answer at {SERVER}: {exc!r}")
        pytest.skip(f"no PostgreSQL answers at {SERVER} ({exc!r})")
    try:
        # A database whose default collation is a language's (ICU English: "dev-a" before
        # "dev-B"), as production databases often are: the inventory must not depend on it.
        await admin.execute(
            f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE "en"'
            ' LOCALE "C.UTF-8"'
        )
        yield f"postgresql+asyncpg://{SERVER.removeprefix('postgresql://')}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def pages(inventory: Inventory, size: int) -> list[list[str]]:
    found: list[list[str]] = []
    start = 1
    while True:
        devices, total = await inventory.list_devices(None, start, size)
        if not devices:
            assert sum(len(p) for p in found) == total
            return found
        found.append([d.id for d in devices])
        start += 1


async def tag_pages(inventory: Inventory, tag: str, size: int) -> list[list[str]]:
    found: list[list[str]] = []
    after: str | None = None
    while devices := await inventory.devices_with_tags([tag], after, size):
        found.append([d.id for d in devices])
        after = devices[-1].id
    return found


def flat(found: list[list[str]]) -> list[str]:
    return [device_id for page in found for device_id in page]


async def provisioned(database_url: str) -> Inventory:
    inventory = Inventory.from_url(database_url)
    await inventory.create_schema()
    await inventory.create_devices([DeviceIn(id=i, tags=["line-7"]) for i in IDS])
    return inventory


async def test_pages_are_the_same_on_postgresql_and_sqlite(
    postgres_url: str, tmp_path: Path
) -> None:
    on_postgres = await provisioned(postgres_url)
    on_sqlite = await provisioned(f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}")
    try:
        for size in (1, 3, 4):
            expected = sorted(IDS, key=lambda i: i.encode())
            assert flat(await pages(on_postgres, size)) == expected
            assert await pages(on_postgres, size) == await pages(on_sqlite, size)
            assert flat(await tag_pages(on_postgres, "line-7", size)) == expected
            assert await tag_pages(on_postgres, "line-7", size) == await tag_pages(
                on_sqlite, "line-7", size
            )
    finally:
        await on_postgres.close()
        await on_sqlite.close()


async def test_devices_tags_and_keys_on_postgresql(postgres_url: str) -> None:
    inventory = await provisioned(postgres_url)
    try:
        long_address = "http://127.0.0.1:1123/" + "p" * 1000
        updated = await inventory.update_device(
            "dev-a", DeviceUpdate(tags=["line-8"], address=long_address)
        )
        assert updated.tags == ["line-8"] and updated.address == long_address
        assert await inventory.count_with_tags(["line-7"]) == len(IDS) - 1
        key = await inventory.create_key("ci-bot", Role.OPERATOR)
        assert (await inventory.authenticate(key.api_key)) is not None
        assert await inventory.delete_key(key.id)
        assert await inventory.authenticate(key.api_key) is None
        assert await inventory.delete_device("dev-a")
        assert await inventory.get_device("dev-a") is None
    finally:
        await inventory.close()


async def test_a_job_on_a_tag_reads_its_targets_from_postgresql(
    env: WorkflowEnvironment, tmp_path: Path, postgres_url: str
) -> None:
    async with running_stack(env, tmp_path, database_url=postgres_url, target_page_size=7) as stack:
        devices = {d["id"] for d in await stack.provision(30, tags=["pg"], prefix="Pg-")}
        job = await stack.create_job(
            {"name": "REBOOT_EQUIPMENT", "target": {"append": {"tags": ["pg"]}}}
        )
        done = await stack.wait_finished(job["id"])
        assert done["report"]["summary"]["total"] == 30
        assert done["report"]["summary"]["finished"]["successful"] == 30
        reached = {o["entityId"] for o in await stack.operations(job["id"])}
        assert reached == devices


async def test_tag_joins_are_read_in_commit_order_on_postgresql(postgres_url: str) -> None:
    inventory = Inventory.from_url(postgres_url)
    await inventory.create_schema()
    try:
        await check_joins(inventory)
    finally:
        await inventory.close()
