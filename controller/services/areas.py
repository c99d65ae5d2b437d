"""The area tree: ancestors, subtrees and scopes."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.models import Area
from schedules import topics


def ancestors(db: Session, area_id: str) -> list[Area]:
    """The chain from the root down to ``area_id`` (widest first)."""
    chain: list[Area] = []
    seen: set[str] = set()
    current = db.get(Area, area_id)
    while current is not None and current.id not in seen:
        seen.add(current.id)
        chain.append(current)
        current = db.get(Area, current.parent_id) if current.parent_id else None
    return list(reversed(chain))


def is_within(db: Session, area_id: str, root_id: str | None) -> bool:
    """True when ``area_id`` is ``root_id`` or below it (``None`` is the whole country)."""
    if root_id is None:
        return True
    return any(a.id == root_id for a in ancestors(db, area_id))


def subtree_ids(db: Session, root_id: str | None) -> set[str]:
    """Ids of ``root_id`` and every area under it."""
    areas = db.scalars(select(Area)).all()
    if root_id is None:
        return {a.id for a in areas}
    children: dict[str | None, list[str]] = {}
    for a in areas:
        children.setdefault(a.parent_id, []).append(a.id)
    out, stack = set(), [root_id]
    while stack:
        node = stack.pop()
        if node in out:
            continue
        out.add(node)
        stack.extend(children.get(node, []))
    return out


def receiver_scopes(db: Session, rx_id: str, area_id: str) -> list[str]:
    """The scopes a receiver subscribes to: every area above it, widest first, then its own."""
    return [topics.area_scope(a.id) for a in ancestors(db, area_id)] + [topics.rx_scope(rx_id)]
