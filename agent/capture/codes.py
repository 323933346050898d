"""Code texts: parsing and validating what barcodes carry, and what a barcode means for capture.

Pure functions over strings: dossier codes, procedure codes, personal ID numbers,
tax codes, the chip ID card (CCCD) QR, look-up URLs, sohoa cover sheets; and
``interpret``, which turns one decoded ``Barcode`` into a capture ``Signal``.
Error messages name the rule that failed, never the text itself (it may be
personal data).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from urllib.parse import parse_qs, urlsplit

from agent.errors import CodeError
from device.barcodes import Barcode

PATCH_T = "PATCHT"
COVER_PREFIX = "SOHOA:"
COVER_KINDS = ("SEP", "DOC", "DOSSIER")

_AGENCY = re.compile(r"\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}")
_DOSSIER_SHAPE = re.compile(r"^(?P<agency>[^-\s]+)-(?P<date>[^-\s]+)-(?P<seq>[^-\s]+)$")
_PROCEDURE = re.compile(r"^\d\.\d{6}(?:\.\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2})?$")
_DOC_TYPE = re.compile(r"^[A-Z0-9]{1,10}(?:\.[A-Z0-9]{1,10}){0,5}$")
_TAX = re.compile(r"^(?P<base>\d{10})(?:-(?P<branch>\d{3}))?$")
TAX_WEIGHTS = (31, 29, 23, 19, 17, 13, 7, 5, 3)
# Birth-place codes of the 63 provinces (Circular 07/2016/TT-BCA, art. 7); numbers
# already issued keep them after provinces merge.
_PROVINCE_CODES = (
    "001 002 004 006 008 010 011 012 014 015 017 019 020 022 024 025 026 027 030 031 "
    "033 034 035 036 037 038 040 042 044 045 046 048 049 051 052 054 056 058 060 062 "
    "064 066 067 068 070 072 074 075 077 079 080 082 083 084 086 087 089 091 092 093 "
    "094 095 096"
)
PROVINCES = frozenset(_PROVINCE_CODES.split())


@dataclass(frozen=True)
class DossierCode:
    text: str
    agency: str
    received: date
    seq: int


def parse_dossier_code(text: str) -> DossierCode:
    """``000.00.20.H56-230512-0003``: agency code, date received (YYMMDD), day's sequence."""
    text = text.strip()
    shape = _DOSSIER_SHAPE.match(text)
    hint = "a dossier code looks like 000.00.20.H56-230512-0003; rescan or type it in"
    if shape is None:
        raise CodeError("dossier code is not <agency>-<YYMMDD>-<sequence>", hint)
    if not _AGENCY.fullmatch(shape["agency"]):
        raise CodeError("dossier code's agency part is not of the form 000.00.00.X00", hint)
    day = shape["date"]
    if not re.fullmatch(r"\d{6}", day):
        raise CodeError("dossier code's date part is not 6 digits (YYMMDD)", hint)
    try:
        received = date(2000 + int(day[:2]), int(day[2:4]), int(day[4:]))
    except ValueError:
        raise CodeError("dossier code's date part is not a real date", hint) from None
    seq = shape["seq"]
    if not re.fullmatch(r"\d{4}", seq) or int(seq) == 0:
        raise CodeError("dossier code's sequence is not 4 digits from 0001", hint)
    return DossierCode(text=text, agency=shape["agency"], received=received, seq=int(seq))


def looks_like_dossier_code(text: str) -> bool:
    """Shaped like a dossier code (``X-NNNNNN-NNNN`` with dots in X), valid or not."""
    shape = _DOSSIER_SHAPE.match(text.strip())
    return bool(shape and "." in shape["agency"] and shape["date"].isdigit())


def parse_procedure_code(text: str) -> str:
    """``1.001612`` (national) or ``1.001612.000.00.00.H56`` (provincial copy)."""
    text = text.strip()
    if not _PROCEDURE.match(text):
        raise CodeError(
            "procedure code is not of the form 1.001612 or 1.001612.000.00.00.H56",
            "copy the procedure code (mã TTHC) from the national public service portal",
        )
    return text


def parse_id_number(text: str) -> str:
    """A 12-digit personal identification number: province, century/sex, birth year, serial."""
    text = text.strip()
    hint = "a personal ID number has 12 digits; check the card or rescan it"
    if not re.fullmatch(r"\d{12}", text):
        raise CodeError("personal ID number is not 12 digits", hint)
    if text[:3] not in PROVINCES:
        raise CodeError("personal ID number's province code does not exist", hint)
    if text[3] not in "0123":
        raise CodeError("personal ID number's century/sex digit is not 0-3", hint)
    return text


def id_birth_year(id_number: str) -> int:
    """The birth year an ID number encodes (century digit 0/1: 1900s, 2/3: 2000s)."""
    return 1900 + 100 * (int(id_number[3]) // 2) + int(id_number[4:6])


def id_is_female(id_number: str) -> bool:
    return int(id_number[3]) % 2 == 1


def parse_tax_code(text: str) -> str:
    """A 10-digit organisation tax code with its check digit, optionally ``-NNN`` (branch)."""
    text = text.strip()
    hint = "a tax code has 10 digits, optionally followed by -001..-999; check it"
    match = _TAX.match(text)
    if match is None:
        raise CodeError("tax code is not 10 digits with an optional -NNN", hint)
    base = match["base"]
    check = 10 - sum(int(d) * w for d, w in zip(base, TAX_WEIGHTS, strict=False)) % 11
    if check == 10 or check != int(base[9]):
        raise CodeError("tax code's check digit is wrong", hint)
    if match["branch"] == "000":
        raise CodeError("tax code's branch number -000 does not exist", hint)
    return text


def _ddmmyyyy(text: str, what: str) -> date | None:
    if not text:
        return None
    try:
        if not re.fullmatch(r"\d{8}", text):
            raise ValueError
        return date(int(text[4:]), int(text[2:4]), int(text[:2]))
    except ValueError:
        raise CodeError(f"ID card QR's {what} is not a ddmmyyyy date", CCCD_HINT) from None


CCCD_HINT = "rescan the ID card's QR code; if it still fails, enter the owner by hand"


@dataclass(frozen=True)
class CitizenCard:
    id_number: str
    old_id: str | None
    name: str
    birth_date: date | None
    sex: str | None
    address: str | None
    issued: date | None


def _sex_is_female(sex: str) -> bool | None:
    folded = unicodedata.normalize("NFC", sex.strip().lower())
    if folded in ("nam", "male", "m"):
        return False
    if folded in ("nữ", "nu", "female", "f"):
        return True
    return None


def parse_cccd_qr(text: str) -> CitizenCard:
    """The chip ID card QR: ``ID12|old ID9|name|ddmmyyyy|sex|address|ddmmyyyy``.

    The old-ID field may be empty or absent (6 fields); fields after the 7th are ignored.
    """
    fields = [f.strip() for f in text.strip().split("|")]
    if len(fields) == 6:
        fields.insert(1, "")
    if len(fields) < 7:
        raise CodeError("ID card QR does not have 6 or 7 fields separated by |", CCCD_HINT)
    id_text, old_id, name, born, sex, address, issued = fields[:7]
    try:
        id_number = parse_id_number(id_text)
    except CodeError as exc:
        raise CodeError(f"ID card QR: {exc.message}", CCCD_HINT) from None
    if old_id and not re.fullmatch(r"\d{9}", old_id):
        raise CodeError("ID card QR's old ID number is not 9 digits", CCCD_HINT)
    if not name:
        raise CodeError("ID card QR has no name", CCCD_HINT)
    birth_date = _ddmmyyyy(born, "birth date")
    if birth_date is not None and birth_date.year != id_birth_year(id_number):
        raise CodeError("ID card QR's birth year disagrees with its ID number", CCCD_HINT)
    female = _sex_is_female(sex)
    if female is not None and female != id_is_female(id_number):
        raise CodeError("ID card QR's sex disagrees with its ID number", CCCD_HINT)
    return CitizenCard(
        id_number=id_number,
        old_id=old_id or None,
        name=name,
        birth_date=birth_date,
        sex=sex or None,
        address=address or None,
        issued=_ddmmyyyy(issued, "issue date"),
    )


def looks_like_cccd_qr(text: str) -> bool:
    fields = text.strip().split("|")
    return len(fields) >= 6 and fields[0].strip().isdigit()


def parse_owner_id(text: str) -> str:
    """An owner is a person (12-digit ID number) or an organisation (tax code)."""
    try:
        return parse_id_number(text)
    except CodeError:
        pass
    try:
        return parse_tax_code(text)
    except CodeError:
        raise CodeError(
            "owner id is neither a personal ID number nor a tax code",
            "check the owner's ID number or tax code",
        ) from None


def parse_lookup_url(text: str) -> tuple[str | None, str | None]:
    """(dossier code from ``MHS=``, owner id from ``SGT=``) of a look-up URL QR."""
    hint = "the QR should be the portal's look-up link with MHS= and/or SGT="
    parts = urlsplit(text.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise CodeError("look-up QR is not an http(s) URL", hint)
    query = {k.upper(): v for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    mhs, sgt = query.get("MHS", [None])[-1], query.get("SGT", [None])[-1]
    if not mhs and not sgt:
        raise CodeError("look-up URL carries no MHS= or SGT=", hint)
    dossier = parse_dossier_code(mhs).text if mhs else None
    owner = parse_owner_id(sgt) if sgt else None
    return dossier, owner


def is_lookup_url(text: str) -> bool:
    upper = text.strip().upper()
    return upper.startswith(("HTTP://", "HTTPS://")) and ("MHS=" in upper or "SGT=" in upper)


@dataclass(frozen=True)
class CoverSheet:
    kind: str  # "SEP" | "DOC" | "DOSSIER"
    doc_type: str | None = None
    pages: int | None = None
    issue_year: int | None = None
    dossier_code: str | None = None
    tthc_code: str | None = None
    documents: int | None = None


_COVER_FIELDS = {"SEP": (), "DOC": ("T", "P", "Y"), "DOSSIER": ("H", "TT", "N")}
COVER_HINT = "print a new sheet with `sohoa sheets`"


def _count(value: str, what: str, top: int) -> int:
    if not re.fullmatch(r"\d{1,5}", value) or not 1 <= int(value) <= top:
        raise CodeError(f"cover sheet's {what} is not a number from 1 to {top}", COVER_HINT)
    return int(value)


def parse_cover_sheet(text: str) -> CoverSheet:
    """``SOHOA:1;K=DOC;T=KQ.G15.000031;P=3;Y=2019`` and the SEP / DOSSIER kinds."""
    text = text.strip()
    if not text.startswith(COVER_PREFIX):
        raise CodeError("not a sohoa cover sheet (no SOHOA: prefix)", COVER_HINT)
    version, _, rest = text[len(COVER_PREFIX) :].partition(";")
    if version != "1":
        raise CodeError("cover sheet format version is not 1", "update sohoa or " + COVER_HINT)
    fields: dict[str, str] = {}
    for item in filter(None, rest.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CodeError("cover sheet field is not KEY=VALUE", COVER_HINT)
        if key in fields:
            raise CodeError(f"cover sheet repeats field {key[:8]}", COVER_HINT)
        fields[key] = value
    kind = fields.pop("K", None)
    if kind not in _COVER_FIELDS:
        raise CodeError(f"cover sheet kind K is not one of {', '.join(COVER_KINDS)}", COVER_HINT)
    unknown = sorted(set(fields) - set(_COVER_FIELDS[kind]))
    if unknown:
        raise CodeError(f"cover sheet {kind} has unknown field {unknown[0][:8]}", COVER_HINT)
    if kind == "DOC":
        doc_type = fields.get("T", "")
        if not _DOC_TYPE.match(doc_type):
            raise CodeError("cover sheet DOC needs T=<document type code>", COVER_HINT)
        year = fields.get("Y")
        if year is not None and (not re.fullmatch(r"\d{4}", year) or int(year) < 1800):
            raise CodeError("cover sheet's issue year Y is not a 4-digit year", COVER_HINT)
        return CoverSheet(
            kind=kind,
            doc_type=doc_type,
            pages=_count(fields["P"], "page count P", 10000) if "P" in fields else None,
            issue_year=int(year) if year is not None else None,
        )
    if kind == "DOSSIER":
        if "H" not in fields or "TT" not in fields:
            raise CodeError(
                "cover sheet DOSSIER needs H=<dossier code> and TT=<procedure>", COVER_HINT
            )
        return CoverSheet(
            kind=kind,
            dossier_code=parse_dossier_code(fields["H"]).text,
            tthc_code=parse_procedure_code(fields["TT"]),
            documents=_count(fields["N"], "document count N", 1000) if "N" in fields else None,
        )
    return CoverSheet(kind=kind)


@dataclass(frozen=True)
class Signal:
    """What one barcode means for splitting and tagging.

    kind: "separator" (PATCHT, the configured text, K=SEP), "cover" (K=DOC or
    K=DOSSIER; ``cover`` set), "dossier" (receipt code or MHS= URL), "owner" (CCCD
    QR or SGT=), "invalid" (looked like one of ours but failed; ``reason`` set,
    without personal data) or "other".
    """

    kind: str
    page: int
    dossier_code: str | None = None
    owner_id: str | None = None
    cover: CoverSheet | None = None
    reason: str | None = None


def interpret(barcode: Barcode, separator_text: str) -> Signal:
    """The capture meaning of one decoded barcode (never raises)."""
    value, page = barcode.value.strip(), barcode.page
    if value == PATCH_T or (separator_text.strip() and value == separator_text.strip()):
        return Signal("separator", page)
    try:
        if value.startswith(COVER_PREFIX):
            cover = parse_cover_sheet(value)
            if cover.kind == "SEP":
                return Signal("separator", page, cover=cover)
            return Signal("cover", page, dossier_code=cover.dossier_code, cover=cover)
        if is_lookup_url(value):
            dossier, owner = parse_lookup_url(value)
            kind = "dossier" if dossier else "owner"
            return Signal(kind, page, dossier_code=dossier, owner_id=owner)
        if looks_like_cccd_qr(value):
            return Signal("owner", page, owner_id=parse_cccd_qr(value).id_number)
        if looks_like_dossier_code(value):
            return Signal("dossier", page, dossier_code=parse_dossier_code(value).text)
    except CodeError as exc:
        return Signal("invalid", page, reason=exc.message)
    return Signal("other", page)
