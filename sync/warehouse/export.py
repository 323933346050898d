"""Export for the one-stop system: each dossier as the JSON document OpenCPS sends to the
national public service portal to synchronise a one-stop dossier (service
``DongBoHoSoMC``), with the digitized documents as ``TaiLieuNop`` attachments that
point at the archived files, so that the province can attach them to dossiers its
one-stop system already tracks.

The shape is OpenCPS's, read in VietOpenCPS/opencps-v2,
``modules/backend-dossiermgt/backend-dossiermgt-service/src/main/java/org/opencps/
dossiermgt/action/impl/DVCQGIntegrationActionImpl.java`` (commit b5b943c2):
``createSyncDossierBodyRequest`` builds each dossier (``MaHoSo`` the dossier number,
``MaTTHC`` the national procedure code, ``TaiLieuNop`` a list of ``TepDinhKemId``,
``TenTepDinhKem``, ``IsDeleted``, ``MaThanhPhanHoSo``, ``DuongDanTaiTepTin``), and
the request body is ``{"isUpdating": …, "service": "DongBoHoSoMC", "data": [dossiers]}``.
``DuocSoHoa`` ("1": a digitized copy) is from the portal's later attachment fields, as
a third-party portal client in the same search corpus sends them beside OpenCPS's.

Only what the warehouse knows is written (``isUpdating``: the dossier exists there
already); fields that OpenCPS fills from its own records (TenTTHC, TrangThaiHoSo,
NgayTiepNhan…) are left out, so that an update never blanks them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sync.warehouse.records import StoredDocument

SERVICE = "DongBoHoSoMC"
_NATIONAL = re.compile(r"^\d\.\d{6}")
_SAFE_NAME = re.compile(r"[^\w.-]")

Link = Callable[[StoredDocument], str]


def national_code(tthc: str | None) -> str | None:
    """``1.001612`` of a provincial copy ``1.001612.000.00.00.H56`` (the portal's code)."""
    m = _NATIONAL.match(tthc or "")
    return m.group() if m else None


def attachment_name(dossier_code: str, seq: int) -> str:
    """``<dossier code>.<document seq>.pdf``, the archival file name (two-digit seq)."""
    return f"{dossier_code}.{seq:02d}.pdf"


def archive_link(archive: Path, base_url: str | None) -> Link:
    """Where a document's PDF is: ``base_url`` + its path in the archive, or without a
    base URL a ``file:`` URI of the archived file."""

    def link(doc: StoredDocument) -> str:
        path = Path(doc.path)
        if base_url is None:
            return path.resolve().as_uri()
        try:
            relative = path.resolve().relative_to(archive.resolve()).as_posix()
        except ValueError:  # stored elsewhere than this archive: its place inside one
            relative = f"docs/{doc.device}/{doc.doc_id}/{path.name}"
        return base_url.rstrip("/") + "/" + quote(relative)

    return link


def _procedure(docs: Sequence[StoredDocument]) -> str:
    codes = Counter(c for d in docs if (c := national_code(d.tthc_code)))
    return codes.most_common(1)[0][0] if codes else ""


def dossier_record(code: str, docs: Sequence[StoredDocument], link: Link) -> dict[str, Any]:
    """One dossier in OpenCPS's ``DongBoHoSoMC`` shape; ``docs`` in capture order."""
    return {
        "MaHoSo": code,
        "MaTTHC": _procedure(docs),
        "TaiLieuNop": [
            {
                "TepDinhKemId": d.doc_id,
                "TenTepDinhKem": attachment_name(code, n),
                "IsDeleted": "False",
                "MaThanhPhanHoSo": d.doc_type or "",
                "DuongDanTaiTepTin": link(d),
                "DuocSoHoa": "1",
            }
            for n, d in enumerate(docs, start=1)
        ],
    }


def sync_body(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The request body OpenCPS posts: the service name and the dossiers."""
    return {"isUpdating": True, "service": SERVICE, "data": list(records)}


def export_file_name(code: str) -> str:
    """A file name for a dossier's export, whatever characters its code holds."""
    return _SAFE_NAME.sub("_", code).lstrip(".") + ".json"
