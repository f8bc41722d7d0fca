"""Custom operation types in the inventory database, beside the devices and keys."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from inventory.schema import OperationTypeRow
from inventory.store import Inventory
from models.bounds import STORED
from models.operation_types import OperationType, OperationTypeRecord


class OperationTypeExists(Exception):
    pass


def _record(row: OperationTypeRow) -> OperationTypeRecord:
    # Read as stored: a type kept under older bounds still loads (models/bounds.py).
    stored = OperationType.model_validate_json(row.definition, context=STORED)
    return OperationTypeRecord.model_validate(
        {
            **stored.model_dump(),
            "custom": True,
            "created_date": _utc(row.created_at),
            "updated_date": _utc(row.updated_at),
        },
        context=STORED,
    )


def _utc(value: datetime) -> datetime:
    # SQLite hands back the naive UTC time it was given.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _json(operation_type: OperationType) -> str:
    # Stored as the plain type, whatever subclass the caller holds.
    return OperationType.model_validate(operation_type.model_dump()).model_dump_json()


class OperationTypeStore:
    def __init__(self, inventory: Inventory) -> None:
        self.session = inventory.session

    async def create(self, operation_type: OperationType) -> OperationTypeRecord:
        now = datetime.now(UTC)
        row = OperationTypeRow(
            name=operation_type.name,
            definition=_json(operation_type),
            created_at=now,
            updated_at=now,
        )
        try:
            async with self.session() as session, session.begin():
                session.add(row)
        except IntegrityError as exc:
            raise OperationTypeExists(operation_type.name) from exc
        return _record(row)

    async def get(self, name: str) -> OperationTypeRecord | None:
        async with self.session() as session:
            row = await session.get(OperationTypeRow, name)
            return _record(row) if row else None

    async def list_types(self) -> list[OperationTypeRecord]:
        async with self.session() as session:
            rows = await session.scalars(select(OperationTypeRow).order_by(OperationTypeRow.name))
            return [_record(r) for r in rows]

    async def update(self, operation_type: OperationType) -> OperationTypeRecord | None:
        """The replaced type, or None when there is no custom type of that name."""
        async with self.session() as session, session.begin():
            row = await session.get(OperationTypeRow, operation_type.name)
            if row is None:
                return None
            row.definition = _json(operation_type)
            row.updated_at = datetime.now(UTC)
        return _record(row)

    async def delete(self, name: str) -> bool:
        async with self.session() as session, session.begin():
            result = await session.execute(
                delete(OperationTypeRow).where(OperationTypeRow.name == name)
            )
        return bool(getattr(result, "rowcount", 0))
