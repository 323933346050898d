"""What a batch produced: the results the command line, the service and the page report,
and the metadata sealed with each document."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.capture.split import DocumentPlan

PAYLOAD_VERSION = 1


@dataclass(frozen=True)
class DocumentResult:
    doc_id: str
    dossier_code: str | None
    owner_id: str | None
    doc_type: str | None
    tthc_code: str | None
    doc_code: str | None
    pages: int
    bytes: int
    flags: tuple[str, ...]
    pdf_sha256: str
    # a certified copy's register entry and signature level; None when not certified
    certification: dict[str, Any] | None = None
    problem: str | None = None  # why a document to certify stayed unsigned

    def to_json(self) -> dict[str, Any]:
        cert = self.certification
        return {
            "doc_id": self.doc_id,
            "dossier_code": self.dossier_code,
            "owner_id": self.owner_id,
            "doc_type": self.doc_type,
            "tthc_code": self.tthc_code,
            "doc_code": self.doc_code,
            "pages": self.pages,
            "bytes": self.bytes,
            "flags": list(self.flags),
            "pdf_sha256": self.pdf_sha256,
            "certification": (
                {k: cert[k] for k in ("number", "book", "date", "level")} if cert else None
            ),
        }


def signing_warnings(doc: DocumentResult) -> list[str]:
    """What the officer must know of a certified copy: kept unsigned, or signed without
    the timestamp the configuration asks for."""
    out = []
    if doc.problem is not None:
        out.append(f"chưa ký số, đã lưu bản chưa ký / not signed, kept unsigned: {doc.problem}")
    if doc.certification and doc.certification.get("tsa_problem"):
        out.append(
            "không lấy được dấu thời gian, đã ký PAdES-B-B / no timestamp, signed PAdES-B-B: "
            + str(doc.certification["tsa_problem"])
        )
    return out


@dataclass(frozen=True)
class CaptureResult:
    batch_id: str
    pages_in: int
    separators: tuple[int, ...]
    warnings: tuple[str, ...]
    documents: tuple[DocumentResult, ...]
    flags: tuple[str, ...] = ()
    status: str = "complete"

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "pages_in": self.pages_in,
            "separators": list(self.separators),
            "warnings": list(self.warnings),
            "flags": list(self.flags),
            "status": self.status,
            "documents": [d.to_json() for d in self.documents],
        }


def document_metadata(
    plan: DocumentPlan,
    *,
    doc_id: str,
    batch_id: str,
    device_id: str,
    profile: str,
    captured_at: str,
    page_checks: list[dict[str, Any]],
) -> dict[str, Any]:
    """The tags sealed with the PDF (Decree 30/2020 names where they exist)."""
    return {
        "payload_version": PAYLOAD_VERSION,
        "doc_id": doc_id,
        "batch_id": batch_id,
        "device_id": device_id,
        "captured_at": captured_at,
        "profile": profile,
        "dossier_code": plan.dossier_code,
        "owner_id": plan.owner_id,
        "doc_type": plan.doc_type,
        "doc_code": plan.doc_code,
        "tthc_code": plan.tthc_code,
        "issue_year": plan.issue_year,
        "flags": list(plan.flags),
        "page_checks": page_checks,
        "decree30": {
            "FileCode": plan.dossier_code,
            "TypeName": plan.doc_type,
            "Language": "vi",
            "PageAmount": len(plan.pages),
        },
    }
