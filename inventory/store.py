"""The inventory's operations, shared by the API (provisioning, auth) and the worker (targets)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, event, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from inventory import keys
from inventory.schema import ApiKeyRow, Base, CertificateRow, DeviceRow, TagJoinRow, TagRow
from models.certificates import BoundCertificate
from models.devices import ApiKey, Device, DeviceIn, DeviceUpdate, NewApiKey, ProvisionedDevice
from models.enums import Role

log = logging.getLogger(__name__)

# Ids per IN (...) list: below SQLite's bound-parameter limit.
_IN_CHUNK = 5000
# PostgreSQL advisory locks: one creator of the tables, one writer of tag joins at a time.
_SCHEMA_LOCK = 7411
_TAG_JOINS_LOCK = 7412


class DeviceExists(Exception):
    pass


class DeviceNotFound(Exception):
    pass


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the API and the worker read while the other writes; busy_timeout waits out a lock.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(database_url: str) -> AsyncEngine:
    if database_url.startswith("sqlite"):
        engine = create_async_engine(database_url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(database_url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _device(row: DeviceRow) -> Device:
    return Device(id=row.id, type=row.type, tags=[t.tag for t in row.tags], address=row.address)


def _api_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(id=row.id, name=row.name, role=Role(row.role), device_id=row.device_id)


def _north_key(key_id: str, name: str, role: Role, secret_hash: str) -> ApiKeyRow:
    return ApiKeyRow(
        id=key_id, name=name, role=role.value, secret_hash=secret_hash, created_at=datetime.now(UTC)
    )


class Inventory:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.session = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, database_url: str) -> Inventory:
        return cls(create_engine(database_url))

    async def create_schema(self) -> None:
        if self.engine.url.get_backend_name() == "sqlite" and self.engine.url.database:
            from pathlib import Path

            Path(self.engine.url.database).parent.mkdir(parents=True, exist_ok=True)
        async with self.engine.begin() as conn:
            if self.engine.url.get_backend_name() == "postgresql":
                # API and workers start together: one creates the tables, the others wait.
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK}
                )
            await conn.run_sync(Base.metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    # --- devices ---

    async def create_devices(
        self, devices: Sequence[DeviceIn]
    ) -> tuple[list[ProvisionedDevice], list[dict[str, str]]]:
        """Provision devices, each with its own south key. Ids already taken are reported back."""
        now = datetime.now(UTC)
        created: list[ProvisionedDevice] = []
        errors: list[dict[str, str]] = []
        async with self.session() as session:
            taken = await self._existing_ids(session, {d.id for d in devices})
            seen: set[str] = set()
            key_rows: list[ApiKeyRow] = []
            for d in devices:
                if d.id in taken or d.id in seen:
                    errors.append({"id": d.id, "message": "device already exists"})
                    continue
                seen.add(d.id)
                key_id, secret, secret_hash = keys.new_key()
                session.add(
                    DeviceRow(
                        id=d.id,
                        type=d.type,
                        address=d.address,
                        created_at=now,
                        tags=[TagRow(tag=t) for t in d.tags],
                    )
                )
                key_rows.append(
                    ApiKeyRow(
                        id=key_id,
                        name=f"device:{d.id}",
                        role=Role.DEVICE.value,
                        secret_hash=secret_hash,
                        device_id=d.id,
                        created_at=now,
                    )
                )
                created.append(ProvisionedDevice(**d.model_dump(), api_key=secret))
            try:
                # The keys and joins point at their devices: the devices go in first.
                await session.flush()
                await self._record_joins(session, [(d.id, t) for d in created for t in d.tags], now)
                session.add_all(key_rows)
                await session.commit()
            except IntegrityError as exc:  # a concurrent request took one of the ids
                raise DeviceExists(str(exc.orig)) from exc
        return created, errors

    @staticmethod
    async def _existing_ids(session: AsyncSession, wanted: set[str]) -> set[str]:
        found: set[str] = set()
        ids = sorted(wanted)
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            query = select(DeviceRow.id).where(DeviceRow.id.in_(chunk))
            found.update((await session.scalars(query)).all())
        return found

    async def get_device(self, device_id: str) -> Device | None:
        async with self.session() as session:
            row = await session.get(DeviceRow, device_id)
            return _device(row) if row else None

    async def update_device(self, device_id: str, update: DeviceUpdate) -> Device:
        async with self.session() as session:
            row = await session.get(DeviceRow, device_id)
            if row is None:
                raise DeviceNotFound(device_id)
            fields = update.model_fields_set
            if "type" in fields and update.type is not None:
                row.type = update.type
            if "address" in fields:
                row.address = update.address
            if "tags" in fields:
                had = {t.tag for t in row.tags}
                row.tags = [TagRow(tag=t) for t in update.tags or []]
                joined = [(device_id, t) for t in update.tags or [] if t not in had]
                await self._record_joins(session, joined, datetime.now(UTC))
            await session.commit()
            return _device(row)

    async def delete_device(self, device_id: str) -> bool:
        async with self.session() as session:
            await session.execute(delete(ApiKeyRow).where(ApiKeyRow.device_id == device_id))
            await session.execute(delete(TagRow).where(TagRow.device_id == device_id))
            await session.execute(delete(TagJoinRow).where(TagJoinRow.device_id == device_id))
            result = await session.execute(delete(DeviceRow).where(DeviceRow.id == device_id))
            await session.commit()
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def list_devices(
        self, tag: str | None, start: int, size: int
    ) -> tuple[list[Device], int]:
        """One page (1-based) of devices in id order, and the number of matching devices."""
        async with self.session() as session:
            query = select(DeviceRow)
            count = select(func.count()).select_from(DeviceRow)
            if tag:
                query = query.join(TagRow).where(TagRow.tag == tag)
                count = select(func.count()).select_from(TagRow).where(TagRow.tag == tag)
            rows = await session.scalars(
                query.order_by(DeviceRow.id).offset((start - 1) * size).limit(size)
            )
            return [_device(r) for r in rows], (await session.scalar(count)) or 0

    async def devices_with_ids(self, ids: Iterable[str]) -> list[Device]:
        async with self.session() as session:
            rows = await session.scalars(select(DeviceRow).where(DeviceRow.id.in_(list(ids))))
            return [_device(r) for r in rows]

    async def devices_with_tags(
        self, tags: Sequence[str], after: str | None, limit: int
    ) -> list[Device]:
        """The next ``limit`` devices carrying any of ``tags`` with an id above ``after``.

        Keyset paging in device id order: a tag of any size is read page by page, and a page
        costs the same wherever it is in the tag.
        """
        ids = select(TagRow.device_id).where(TagRow.tag.in_(list(tags))).distinct()
        if after is not None:
            ids = ids.where(TagRow.device_id > after)
        ids = ids.order_by(TagRow.device_id).limit(limit)
        async with self.session() as session:
            rows = await session.scalars(
                select(DeviceRow).where(DeviceRow.id.in_(ids)).order_by(DeviceRow.id)
            )
            return [_device(r) for r in rows]

    async def _record_joins(
        self, session: AsyncSession, joins: Sequence[tuple[str, str]], at: datetime
    ) -> None:
        """Number each (device, tag) join, in the transaction that gives the tag.

        On PostgreSQL the transaction first takes a lock that writers of joins share, held to
        its commit: a join's number is then drawn only after every smaller one was committed,
        and a continuous job reading past number n never misses a join committed after it read.
        SQLite has one writer at a time anyway.
        """
        if not joins:
            return
        if self.engine.url.get_backend_name() == "postgresql":
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _TAG_JOINS_LOCK}
            )
        session.add_all(TagJoinRow(device_id=d, tag=t, joined_at=at) for d, t in joins)
        await session.flush()

    async def last_tag_join(self) -> int:
        """The number of the latest tag join (0 before any): where a continuous job starts
        reading joins, taken before it reads its tags' devices, so none falls in between."""
        async with self.session() as session:
            return (await session.scalar(select(func.max(TagJoinRow.seq)))) or 0

    async def devices_joined(
        self, tags: Sequence[str], after: int, limit: int
    ) -> tuple[list[tuple[Device, int]], int, bool]:
        """Devices that joined one of ``tags`` after join number ``after`` and still carry one.

        Reads the next ``limit`` joins in the order they were committed; answers each device of
        them once, with the number of its latest join, in that order; the number of the last
        join read (``after`` when there was none), the cursor of the next read; and whether
        ``limit`` joins were read, so more may follow.
        """
        joins = (
            select(TagJoinRow.seq, TagJoinRow.device_id)
            .where(TagJoinRow.tag.in_(list(tags)), TagJoinRow.seq > after)
            .order_by(TagJoinRow.seq)
            .limit(limit)
        )
        async with self.session() as session:
            read = (await session.execute(joins)).all()
            if not read:
                return [], after, False
            latest = {device_id: seq for seq, device_id in read}
            tagged = select(TagRow.device_id).where(
                TagRow.tag.in_(list(tags)), TagRow.device_id.in_(list(latest))
            )
            rows = await session.scalars(select(DeviceRow).where(DeviceRow.id.in_(tagged)))
            found = sorted(((_device(r), latest[r.id]) for r in rows), key=lambda pair: pair[1])
            return found, read[-1][0], len(read) == limit

    async def count_with_tags(self, tags: Sequence[str]) -> int:
        query = select(func.count(func.distinct(TagRow.device_id))).where(
            TagRow.tag.in_(list(tags))
        )
        async with self.session() as session:
            return (await session.scalar(query)) or 0

    # --- API keys ---

    async def create_key(self, name: str, role: Role) -> NewApiKey:
        key_id, secret, secret_hash = keys.new_key()
        async with self.session() as session:
            session.add(_north_key(key_id, name, role, secret_hash))
            await session.commit()
        return NewApiKey(id=key_id, name=name, role=role, api_key=secret)

    async def import_key(self, name: str, role: Role, secret: str) -> None:
        """Store a key whose secret comes from configuration (the bootstrap admin key)."""
        key_id, secret_hash = keys.key_from_secret(secret)
        if not key_id:
            raise ValueError("a configured key has the form <id>.<secret>")
        async with self.session() as session:
            if await session.get(ApiKeyRow, key_id) is None:
                session.add(_north_key(key_id, name, role, secret_hash))
                await session.commit()

    async def has_admin(self) -> bool:
        async with self.session() as session:
            found = await session.scalar(
                select(ApiKeyRow.id).where(ApiKeyRow.role == Role.ADMIN.value).limit(1)
            )
            return found is not None

    async def list_keys(self) -> list[ApiKey]:
        async with self.session() as session:
            rows = await session.scalars(
                select(ApiKeyRow)
                .where(ApiKeyRow.device_id.is_(None))
                .order_by(ApiKeyRow.created_at)
            )
            return [_api_key(r) for r in rows]

    async def delete_key(self, key_id: str) -> bool:
        async with self.session() as session:
            await session.execute(delete(CertificateRow).where(CertificateRow.key_id == key_id))
            result = await session.execute(
                delete(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.device_id.is_(None))
            )
            await session.commit()
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def authenticate(self, presented: str) -> ApiKey | None:
        key_id, presented_hash = keys.key_from_secret(presented)
        row = None
        if key_id:
            async with self.session() as session:
                row = await session.get(ApiKeyRow, key_id)
        if not keys.matches(row.secret_hash if row else None, presented_hash):
            return None
        assert row is not None
        return _api_key(row)

    # --- client certificates bound to north keys ---

    async def bind_certificate(
        self, key_id: str, fingerprint: str, subject: str
    ) -> BoundCertificate | None:
        """Bind a certificate to a north key (None: no such north key). A certificate bound to
        another key before is bound to this one now: one certificate, one identity."""
        async with self.session() as session:
            key = await session.get(ApiKeyRow, key_id)
            if key is None or key.device_id is not None:
                return None
            row = await session.get(CertificateRow, fingerprint)
            if row is None:
                row = CertificateRow(fingerprint=fingerprint, created_at=datetime.now(UTC))
                session.add(row)
            row.key_id, row.subject = key_id, subject
            await session.commit()
            return _bound(row)

    async def certificates_of(self, key_id: str) -> list[BoundCertificate]:
        async with self.session() as session:
            rows = await session.scalars(
                select(CertificateRow)
                .where(CertificateRow.key_id == key_id)
                .order_by(CertificateRow.created_at)
            )
            return [_bound(r) for r in rows]

    async def unbind_certificate(self, key_id: str, fingerprint: str) -> bool:
        async with self.session() as session:
            result = await session.execute(
                delete(CertificateRow).where(
                    CertificateRow.key_id == key_id, CertificateRow.fingerprint == fingerprint
                )
            )
            await session.commit()
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def key_of_certificate(self, fingerprint: str) -> ApiKey | None:
        """The north key a (verified) client certificate is bound to, if any."""
        async with self.session() as session:
            row = await session.scalar(
                select(ApiKeyRow)
                .join(CertificateRow, CertificateRow.key_id == ApiKeyRow.id)
                .where(CertificateRow.fingerprint == fingerprint)
            )
            return _api_key(row) if row else None

    async def has_device(self, device_id: str) -> bool:
        async with self.session() as session:
            found = await session.scalar(select(DeviceRow.id).where(DeviceRow.id == device_id))
            return found is not None


def _bound(row: CertificateRow) -> BoundCertificate:
    return BoundCertificate(
        key_id=row.key_id,
        fingerprint=row.fingerprint,
        subject=row.subject,
        created_at=row.created_at,
    )
