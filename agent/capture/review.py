"""The officer's corrections to a batch before it is sealed, as pure functions on a plan.

In review mode (``[ui] review = true``) the capture thread shows the officer
its plan and waits; the counter page answers with one of these edits, or with
"confirm". Each returns a new plan; page indexes are input page indexes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from agent.capture.split import BatchPlan, DocumentPlan
from agent.errors import FAILURES

if TYPE_CHECKING:
    from agent.capture.events import CaptureEvents

log = logging.getLogger("sohoa.capture")


@dataclass(frozen=True)
class Edit:
    """One correction: ``move`` (document ``doc`` starts at ``page``), ``drop`` (page
    ``page`` leaves its document), or ``confirm`` (seal as it is)."""

    action: str
    page: int = -1
    doc: int = -1


class EditError(ValueError):
    """An edit that does not fit the plan (a stale page, a document that does not exist)."""


def move_boundary(plan: BatchPlan, doc: int, page: int) -> BatchPlan:
    """Document ``doc`` (≥ 1) now starts at ``page``: pages move across the boundary
    between it and the one before; their tags stay with the document they join."""
    docs = list(plan.documents)
    if not 1 <= doc < len(docs):
        raise EditError(f"there is no boundary before document {doc + 1}")
    before, after = docs[doc - 1], docs[doc]
    pages = before.pages + after.pages
    if page not in pages or page == pages[0]:
        raise EditError(f"page {page + 1} cannot start document {doc + 1}")
    cut = pages.index(page)
    docs[doc - 1] = replace(before, pages=pages[:cut])
    docs[doc] = replace(after, pages=pages[cut:])
    return replace(plan, documents=tuple(docs))


def drop_page(plan: BatchPlan, page: int) -> BatchPlan:
    """Page ``page`` leaves the batch's documents (a document left empty goes too)."""
    found = False
    docs: list[DocumentPlan] = []
    for d in plan.documents:
        if page in d.pages:
            found = True
            d = replace(d, pages=tuple(p for p in d.pages if p != page))
        if d.pages:
            docs.append(d)
    if not found:
        raise EditError(f"page {page + 1} is in no document")
    return replace(
        plan, documents=tuple(docs), flags=tuple(dict.fromkeys((*plan.flags, "reviewed")))
    )


def apply_edit(plan: BatchPlan, edit: Edit) -> BatchPlan:
    if edit.action == "move":
        return move_boundary(plan, edit.doc, edit.page)
    if edit.action == "drop":
        return drop_page(plan, edit.page)
    raise EditError(f"unknown correction {edit.action!r}")


def reviewed(
    plan: BatchPlan,
    batch_id: str,
    events: CaptureEvents,
    rescan: Callable[[int], None] = lambda _page: None,
) -> BatchPlan:
    """The plan after the officer's corrections (review mode); unchanged otherwise.
    ``rescan(page)`` takes one page again from the scanner in place of ``page``."""
    while (edit := events.review(batch_id, plan)).action != "confirm":
        try:
            if edit.action == "rescan":
                rescan(edit.page)
            else:
                plan = apply_edit(plan, edit)
        except (EditError, *FAILURES) as exc:
            log.warning("correction refused batch=%s reason=%s", batch_id, exc)
    return plan
