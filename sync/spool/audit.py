"""The hash-chained audit log: batch -> page hashes -> document -> receipt.

Each entry's hash is SHA-256 over the previous hash and the entry's canonical
JSON, so that removing, reordering or editing any entry breaks the chain from
that point on. Entries carry hashes and ids only, never personal data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
KINDS = ("batch", "document", "sent", "receipt", "purge", "recovery")
RECOVERED = ("finished", "adopted")  # recovery actions that bring a document in


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: str
    kind: str
    body: Mapping[str, Any]
    prev: str
    hash: str


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev: str, seq: int, ts: str, kind: str, body: Mapping[str, Any]) -> str:
    material = canonical({"seq": seq, "ts": ts, "kind": kind, "body": body})
    return hashlib.sha256(prev.encode() + b"\n" + material).hexdigest()


def chain_entry(prev: AuditEntry | None, ts: str, kind: str, body: Mapping[str, Any]) -> AuditEntry:
    """The next entry after ``prev`` (None for the first)."""
    if kind not in KINDS:
        raise ValueError(f"unknown audit kind {kind}")
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS if prev is None else prev.hash
    return AuditEntry(
        seq, ts, kind, dict(body), prev_hash, entry_hash(prev_hash, seq, ts, kind, body)
    )


@dataclass(frozen=True)
class AuditProblem:
    seq: int
    reason: str


def verify_chain(entries: Iterable[AuditEntry]) -> list[AuditProblem]:
    """Every place where the chain or its cross-links break, in order."""
    problems: list[AuditProblem] = []
    prev_hash = GENESIS
    expected_seq = 1
    batch_pages: dict[str, set[str]] = {}
    documents: set[str] = set()
    for e in entries:
        if e.seq != expected_seq:
            problems.append(AuditProblem(e.seq, f"entry {expected_seq} is missing"))
        if e.prev != prev_hash:
            problems.append(AuditProblem(e.seq, "link to the previous entry is broken"))
        if entry_hash(e.prev, e.seq, e.ts, e.kind, e.body) != e.hash:
            problems.append(AuditProblem(e.seq, "entry was modified after it was written"))
        if e.kind == "batch":
            batch_pages[str(e.body.get("batch_id"))] = set(e.body.get("page_sha256", []))
        elif e.kind == "document":
            pages = batch_pages.get(str(e.body.get("batch_id")))
            if pages is None:
                problems.append(AuditProblem(e.seq, "document refers to a batch not in the log"))
            elif not set(e.body.get("page_sha256", [])) <= pages:
                problems.append(AuditProblem(e.seq, "document holds pages its batch never scanned"))
            documents.add(str(e.body.get("doc_id")))
        elif e.kind == "recovery" and e.body.get("action") in RECOVERED:
            # a crash before the document entry: recovery vouches for the file instead
            documents.add(str(e.body.get("doc_id")))
        elif e.kind in ("sent", "receipt", "purge") and str(e.body.get("doc_id")) not in documents:
            problems.append(AuditProblem(e.seq, f"{e.kind} for a document not in the log"))
        prev_hash = e.hash
        expected_seq = e.seq + 1
    return problems


def verify_against_index(
    entries: Iterable[AuditEntry], states: Mapping[str, str]
) -> list[AuditProblem]:
    """Entries cut off the end of the log: every indexed document must be in the
    log, and every stored or purged one must have its receipt there."""
    logged: set[str] = set()
    receipted: set[str] = set()
    last = 0
    for e in entries:
        last = e.seq
        doc = str(e.body.get("doc_id"))
        if e.kind == "document" or (e.kind == "recovery" and e.body.get("action") in RECOVERED):
            logged.add(doc)
        elif e.kind == "receipt":
            receipted.add(doc)
    problems = []
    for doc, state in sorted(states.items()):
        if doc not in logged:
            problems.append(
                AuditProblem(last + 1, f"document {doc} is in the spool but not in the log")
            )
        elif state in ("stored", "purged") and doc not in receipted:
            problems.append(
                AuditProblem(last + 1, f"receipt of document {doc} is missing from the log")
            )
    return problems
