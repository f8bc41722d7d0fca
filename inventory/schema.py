"""Tables of the inventory. Portable SQL: SQLite by default, PostgreSQL by ``DATABASE_URL``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


# Device ids are paged by keyset in id order: the order must be the bytes' order everywhere
# (SQLite compares text as bytes; a PostgreSQL database created with a locale collation would
# sort "dev-B" after "dev-a" and page differently).
def _device_id() -> String:
    return String(128).with_variant(String(128, collation="C"), "postgresql")


class DeviceRow(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(_device_id(), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    tags: Mapped[list[TagRow]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="TagRow.tag"
    )


class TagRow(Base):
    __tablename__ = "device_tags"

    # (tag, device_id) is the key a tag's devices are read by, in device id order.
    tag: Mapped[str] = mapped_column(String(128), primary_key=True)
    device_id: Mapped[str] = mapped_column(
        _device_id(), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )


class TagJoinRow(Base):
    """A device gaining a tag, numbered in the order the joins were committed: what continuous
    jobs read to reach the devices that join their tags (docs/engine.md, "Continuous jobs")."""

    __tablename__ = "tag_joins"

    # Never reused (SQLite's AUTOINCREMENT; a PostgreSQL sequence), so a job's cursor into the
    # joins only ever moves forward. Joins are inserted under one lock (inventory/store.py), so
    # numbers are also committed in order and a reader never skips a join committed late.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    tag: Mapped[str] = mapped_column(String(128))
    device_id: Mapped[str] = mapped_column(
        _device_id(), ForeignKey("devices.id", ondelete="CASCADE")
    )
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_tag_joins_tag_seq", "tag", "seq"),
        Index("ix_tag_joins_device", "device_id"),
        {"sqlite_autoincrement": True},
    )


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_api_keys_device", "device_id"),)


class CertificateRow(Base):
    """A client certificate bound to a north key: a service calls north with it alone, with the
    key's identity and role (docs/api.md, "Certificates"). Removed with its key."""

    __tablename__ = "api_key_certificates"

    # SHA-256 of the certificate's DER form, hex: one certificate stands for one key at most.
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_api_key_certificates_key", "key_id"),)


class OperationTypeRow(Base):
    """A custom operation type (SPEC 3.4); the built-in catalog lives in code."""

    __tablename__ = "operation_types"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The type object as JSON: its schema is free-form, and only the API reads it whole.
    definition: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
