"""Labelled rows: stored per telemetry window, the window (not the poster) naming the model and the cohort."""

from __future__ import annotations

import json
import time

from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.telemetry.models import TelemetryWindowRow
from control_plane.training.models import LabelledRows
from control_plane.training.schemas import RowsCreate, RowsResult


def post_rows(*, session: Session, request: RowsCreate, actor: str) -> RowsResult:
    """Store labelled rows per stored window (replacing earlier rows of that window); unknown windows are listed."""
    t = TelemetryWindowRow
    entries = {(e.device_id, e.window_seq): e for e in request.windows}
    found = {(r.device_id, int(r.window_seq)): r for r in session.execute(
        select(t.device_id, t.window_seq, t.model_name, t.model_version, t.device_group, t.window_start)
        .where(tuple_(t.device_id, t.window_seq).in_(list(entries))))}
    known = [key for key in entries if key in found]
    replaced = 0
    if known:
        result = session.execute(delete(LabelledRows).where(tuple_(LabelledRows.device_id,
                                                                   LabelledRows.window_seq).in_(known)))
        replaced = int(getattr(result, "rowcount", 0) or 0)
        now = time.time()
        session.execute(insert(LabelledRows), [
            {"device_id": key[0], "window_seq": key[1], "model_name": found[key].model_name,
             "model_version": int(found[key].model_version), "device_group": found[key].device_group,
             "window_start": float(found[key].window_start), "rows": len(entries[key].labels),
             "features": json.dumps(entries[key].features, separators=(",", ":")),
             "labels": json.dumps(entries[key].labels), "received_at": now, "created_by": actor}
            for key in known])
    session.flush()
    unknown = sorted(set(entries) - set(found))
    stored_rows = sum(len(entries[key].labels) for key in known)
    audit.record(session, actor=actor, action="training.rows", resource=("training_rows", "batch"),
                 data={"windows": len(known), "rows": stored_rows, "replaced": replaced, "unknown": len(unknown)})
    return RowsResult(stored_windows=len(known), stored_rows=stored_rows, replaced=replaced,
                      unknown_windows=[list(k) for k in unknown])
