"""Recorded batches reach the rows API for the stored windows they fell into, and nowhere else."""

from __future__ import annotations

import json

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import select

from control_plane.db.session import Database
from control_plane.training.labelling import RowRecorder, post_recorded_rows
from control_plane.training.models import LabelledRows
from tests.conftest import TokenFactory
from tests.control_plane.training.conftest import store_windows


def test_recorded_batches_are_posted_for_the_windows_they_fell_into(client: TestClient, database: Database,
                                                                    make_headers: TokenFactory) -> None:
    keys = store_windows(database, "b", 3, start=1000.0)  # windows [1000, 1001), [1001, 1002), [1002, 1003)
    recorder = RowRecorder()
    first, second = keys[0], keys[1]
    recorder.record(first[0], np.full((2, 4), 1.0), np.array([1, 1]), at=1000.2)
    recorder.record(first[0], np.full((1, 4), 2.0), np.array([2]), at=1000.9)
    recorder.record(second[0], np.full((3, 4), 3.0), np.array([3, 3, 3]), at=1001.5)
    recorder.record(second[0], np.full((5, 4), 9.0), np.array([9] * 5), at=5000.0)  # no stored window then
    client.headers.update(make_headers("operator"))
    totals = post_recorded_rows(client, recorder, sorted({first[0], second[0]}))
    assert totals == {"stored_windows": 2, "stored_rows": 6}
    with database.transaction(write=False) as session:
        stored = {(r.device_id, r.window_seq): (json.loads(r.labels), r.device_group)
                  for r in session.scalars(select(LabelledRows))}
    assert stored == {first: ([1, 1, 2], "b"), second: ([3, 3, 3], "b")}
