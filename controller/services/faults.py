"""Faults in scope: the one query the faults page and the faults API share."""

from __future__ import annotations

from sqlalchemy import Select, select, true

from controller.models import Fault, FaultAck, Receiver, User


def fault_query(visible: set[str], state: str | None) -> Select:
    """SELECT (Fault, FaultAck, acked-by username, Receiver) in scope, by state."""
    q = (select(Fault, FaultAck, User.username, Receiver).join(Receiver, Receiver.id == Fault.rx_id)
         .outerjoin(FaultAck, FaultAck.fault_id == Fault.id).outerjoin(User, User.id == FaultAck.acked_by)
         .where(Receiver.area_id.in_(visible)))
    if state == "open":
        q = q.where(Fault.cleared_ms.is_(None), FaultAck.fault_id.is_(None))
    elif state == "acked":
        q = q.where(Fault.cleared_ms.is_(None), FaultAck.fault_id.is_not(None))
    elif state == "resolved":
        q = q.where(Fault.cleared_ms.is_not(None))
    else:
        q = q.where(true())
    return q
