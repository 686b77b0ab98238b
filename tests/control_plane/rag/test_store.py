"""The RAG store on a real chromadb: ingest idempotency, retrieval modes, reopening, HTTP client."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from control_plane.rag import RUNBOOKS, RagStore
from control_plane.rag.store import make_client


def test_ingest_is_idempotent_and_tracks_changes(tmp_path: Path, runbook_dir: Path) -> None:
    store = RagStore(data_dir=tmp_path / "chroma")
    first = store.ingest(RUNBOOKS, runbook_dir)
    assert sorted(first.added) == [
        "broker-outage.md",
        "drift-alert-triage.md",
        "ota-failure-reasons.md",
        "rollback-procedure.md",
    ]
    count = store.count(RUNBOOKS)
    assert count == first.chunks_written > 4
    again = store.ingest(RUNBOOKS, runbook_dir)
    assert not again.changed and len(again.unchanged) == 4 and store.count(RUNBOOKS) == count

    (runbook_dir / "broker-outage.md").write_text("# Broker outage\n\nRestart mosquitto.\n", encoding="utf-8")
    (runbook_dir / "drift-alert-triage.md").unlink()
    (runbook_dir / "new.md").write_text("# New\n\nA new runbook about certificate rotation.\n", encoding="utf-8")
    changed = store.ingest(RUNBOOKS, runbook_dir)
    assert changed.updated == ["broker-outage.md"]
    assert changed.removed == ["drift-alert-triage.md"]
    assert changed.added == ["new.md"]
    sources = {m["source"] for m in store.collection(RUNBOOKS).get(include=["metadatas"])["metadatas"]}
    assert sources == {"broker-outage.md", "new.md", "ota-failure-reasons.md", "rollback-procedure.md"}
    broker = store.collection(RUNBOOKS).get(where={"source": "broker-outage.md"}, include=["metadatas", "documents"])
    assert broker["documents"] == ["Broker outage\n\nRestart mosquitto."]
    meta = broker["metadatas"][0]
    assert meta["heading"] == "Broker outage" and meta["chunk_index"] == 0 and len(meta["content_hash"]) == 64


@pytest.mark.parametrize("mode", ["hybrid", "lexical", "dense"])
def test_retrieval_finds_the_right_runbook_chunk(tmp_path: Path, runbook_dir: Path, mode: str) -> None:
    store = RagStore(data_dir=tmp_path / "chroma")
    store.ingest(RUNBOOKS, runbook_dir)
    hits = store.search(RUNBOOKS, "a device reported sha256_mismatch after the artifact download", k=3, mode=mode)  # type: ignore[arg-type]
    assert hits[0].source == "ota-failure-reasons.md"
    assert hits[0].heading == "OTA failure reasons > Failed during download or verification"
    assert [h.rank for h in hits] == [1, 2, 3]
    rollback = store.search(RUNBOOKS, "re-publishing an old manifest is rejected as a replay", k=1, mode=mode)  # type: ignore[arg-type]
    assert rollback[0].source == "rollback-procedure.md"


def test_search_edge_cases(tmp_path: Path) -> None:
    store = RagStore(data_dir=tmp_path / "chroma")
    assert store.search(RUNBOOKS, "anything", mode="hybrid") == []
    assert store.search(RUNBOOKS, "   ") == []
    with pytest.raises(ValueError):
        store.search(RUNBOOKS, "x", k=0)
    with pytest.raises(ValueError):
        store.search(RUNBOOKS, "x", mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="data_dir"):
        make_client()
    with pytest.raises(ValueError, match="http"):
        make_client(url="ftp://example")


def test_reopened_store_sees_the_data_and_lexical_index_refreshes(tmp_path: Path, runbook_dir: Path) -> None:
    writer = RagStore(data_dir=tmp_path / "chroma")
    writer.ingest(RUNBOOKS, runbook_dir)
    reader = RagStore(data_dir=tmp_path / "chroma")
    assert reader.search(RUNBOOKS, "broker ran out of file descriptors", k=1)[0].source == "broker-outage.md"
    (runbook_dir / "cert.md").write_text("# Certificates\n\nRotate the TLS certificate yearly.\n", encoding="utf-8")
    writer.ingest(RUNBOOKS, runbook_dir)
    # The reader's cached BM25 index notices the new chunk through the collection count.
    assert reader.search(RUNBOOKS, "rotate TLS certificate", k=1, mode="lexical")[0].source == "cert.md"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_http_client_against_a_real_chroma_server(tmp_path: Path, runbook_dir: Path) -> None:
    chroma = Path(sys.executable).parent / "chroma"  # the venv running the tests has the chromadb server
    binary = str(chroma) if chroma.exists() else "chroma"
    port = _free_port()
    server = subprocess.Popen(
        [binary, "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("chroma server did not start") from None
                time.sleep(0.1)
        store = RagStore(url=f"http://127.0.0.1:{port}")
        assert len(store.ingest(RUNBOOKS, runbook_dir).added) == 4
        hits = store.search(RUNBOOKS, "how do I roll back a bad model version", k=1, mode="hybrid")
        assert hits[0].source == "rollback-procedure.md"
        assert not RagStore(url=f"http://127.0.0.1:{port}").ingest(RUNBOOKS, runbook_dir).changed
    finally:
        server.terminate()
        server.wait(timeout=10)
