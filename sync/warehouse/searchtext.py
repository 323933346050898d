"""Search text: how a document's words and metadata become searchable tokens, how a
query becomes a phrase, and how a hit is shown.

Vietnamese is written with stacked diacritics that users often leave out when they
type ("ho kinh doanh" for "hộ kinh doanh"), so both sides are folded the same way
before either backend sees them: NFD, combining marks dropped, đ → d, lower case;
words are runs of letters and digits, so a code such as
``000.00.20.H56-230512-0003`` becomes the tokens ``000 00 20 h56 230512 0003``. A
query matches as a phrase (its tokens in order, next to each other): Vietnamese
words are several syllables long, and a code must match as written, not as a bag
of numbers. SQLite FTS5 and PostgreSQL full text both index these folded tokens, so
the two backends find the same documents.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sync.errors import QueryError
from sync.warehouse.records import StoredDocument

_WORD = re.compile(r"[^\W_]+")
# đ has no decomposition; Ð (eth) is how OCR sometimes reads Đ
_STROKES = str.maketrans({"đ": "d", "Đ": "d", "ð": "d", "Ð": "d"})
MAX_QUERY_TOKENS = 32
SNIPPET_CONTEXT = 60  # characters of the original text shown either side of a hit


def fold(text: str) -> str:
    """``text`` without diacritics, in lower case: "Hộ Kinh Đỗ" → "ho kinh do"."""
    decomposed = unicodedata.normalize("NFD", text.translate(_STROKES))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", bare).casefold().translate(_STROKES)


def tokens(text: str) -> list[str]:
    """The folded words of ``text``, in order."""
    return _WORD.findall(fold(text))


def token_text(text: str) -> str:
    """The folded words of ``text`` joined by spaces: what an index stores."""
    return " ".join(tokens(text))


def query_phrase(query: str) -> list[str]:
    """The tokens a query must match, in order; a query without any is refused."""
    phrase = tokens(query)
    if not phrase:
        raise QueryError(
            "the search text has no letters or digits / nội dung tìm kiếm không có chữ hoặc số",
            "search for words, a dossier code, an owner id or a procedure code",
        )
    if len(phrase) > MAX_QUERY_TOKENS:
        raise QueryError(
            f"the search text has more than {MAX_QUERY_TOKENS} words"
            f" / nội dung tìm kiếm dài quá {MAX_QUERY_TOKENS} từ",
            "search for a shorter phrase",
        )
    return phrase


def chunks(words: Sequence[str], size: int, overlap: int) -> Iterator[list[str]]:
    """``words`` in pieces of at most ``size``, each repeating the last ``overlap``
    words of the one before, so that a phrase of up to ``overlap + 1`` words is whole
    in at least one piece."""
    if not words:
        return
    step = size - overlap
    for start in range(0, max(len(words) - overlap, 1), step):
        yield list(words[start : start + size])


@dataclass(frozen=True)
class Field:
    """One metadata value that search covers, with the label a hit shows it under."""

    label: str
    value: str


def _dmy(iso_date: str | None) -> str | None:
    """A date as Vietnamese documents write it: 2023-05-12… → 12/05/2023."""
    if not iso_date or not re.match(r"\d{4}-\d{2}-\d{2}", iso_date):
        return None
    return f"{iso_date[8:10]}/{iso_date[5:7]}/{iso_date[:4]}"


def metadata_fields(doc: StoredDocument) -> list[Field]:
    """What a document's metadata offers to search, in the order a hit names it. The
    owner id is followed by the type, so that a digitized document code
    (``<owner id>.<type>``) matches as a phrase."""
    values = [
        ("mã hồ sơ", doc.dossier_code),
        ("chủ hồ sơ", doc.owner_id),
        ("loại", doc.doc_type),
        ("thủ tục", doc.tthc_code),
        ("tiêu đề", doc.title),
        ("năm ban hành", str(doc.issue_year) if doc.issue_year else None),
        ("ngày tiếp nhận", doc.dossier_date),
        ("ngày tiếp nhận", _dmy(doc.dossier_date)),
        ("ngày quét", (doc.captured_at or "")[:10] or None),
        ("ngày quét", _dmy(doc.captured_at)),
        ("ngày lưu", doc.stored_at[:10]),
        ("ngày lưu", _dmy(doc.stored_at)),
        ("tài liệu", doc.doc_id),
        ("thiết bị", doc.device),
    ]
    return [Field(label, value) for label, value in values if value]


def metadata_text(fields: Sequence[Field]) -> str:
    """The folded tokens of every field, in order: what the index matches a query to."""
    return " ".join(token_text(f.value) for f in fields)


def _find(haystack: Sequence[str], phrase: Sequence[str]) -> int | None:
    n = len(phrase)
    for i in range(len(haystack) - n + 1):
        if list(haystack[i : i + n]) == list(phrase):
            return i
    return None


def text_snippet(text: str, phrase: Sequence[str]) -> str | None:
    """The passage of ``text`` (as written, diacritics and all) where ``phrase`` is,
    with some context either side; None when the phrase is not in the text."""
    shown = unicodedata.normalize("NFC", text)
    spans = [(m.start(), m.end(), fold(m.group())) for m in _WORD.finditer(shown)]
    words: list[str] = []
    owner: list[int] = []  # which span each folded word came from
    for n, (_, _, folded) in enumerate(spans):
        for part in _WORD.findall(folded):
            words.append(part)
            owner.append(n)
    at = _find(words, phrase)
    if at is None:
        return None
    start, end = spans[owner[at]][0], spans[owner[at + len(phrase) - 1]][1]
    lo, hi = max(0, start - SNIPPET_CONTEXT), min(len(shown), end + SNIPPET_CONTEXT)
    passage = " ".join(shown[lo:hi].split())
    return ("…" if lo > 0 else "") + passage + ("…" if hi < len(shown) else "")


def field_snippet(fields: Sequence[Field], phrase: Sequence[str]) -> str | None:
    """``label: value`` of the first metadata field that holds ``phrase``."""
    for f in fields:
        if _find(tokens(f.value), phrase) is not None:
            return f"{f.label}: {f.value}"
    return None
