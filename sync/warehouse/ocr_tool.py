"""OCRmyPDF and Tesseract behind one thin module: the command line, its environment, its
exit codes in words, the tools' presence, and pikepdf's PDF/A-2b check of the result.

OCRmyPDF runs as a child process (its own process group, killed with the worker that
started it), one page at a time (``-j 1``) with Tesseract held to ``threads`` threads
(``OMP_THREAD_LIMIT``), so that the number of OCR workers is the number of cores OCR
may take. Its temporary files go in a folder the caller names, inside the archive:
they hold decrypted page images.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sync.errors import ExitCode, MissingDependencyError, SohoaError

LANGUAGE = "vie"
PR_SET_PDEATHSIG = 1
# OCRmyPDF's documented exit codes (ocrmypdf.exceptions.ExitCode), in words
EXIT_REASONS = {
    1: "bad arguments",
    2: "the input is not a PDF it can read",
    3: "a program it needs is missing or unusable",
    4: "it wrote an invalid PDF",
    5: "it could not read or write a file",
    6: "the PDF already has text",
    7: "a program it ran failed",
    8: "the PDF is encrypted",
    9: "its configuration is invalid",
    10: "it could not make PDF/A",
    15: "an unexpected error",
    130: "it was interrupted",
}
# the input itself is at fault: trying again gives the same answer
PERMANENT = frozenset({2, 4, 6, 8, 10})
MISSING_DEPENDENCY = 3  # this host's fault, not the document's: the worker stops


class OcrError(SohoaError):
    """One document's OCR did not produce a searchable PDF/A copy."""

    exit_code = ExitCode.other

    def __init__(self, message: str, hint: str = "", *, permanent: bool = False) -> None:
        super().__init__(message, hint)
        self.permanent = permanent


@dataclass(frozen=True)
class OcrTool:
    """How to run OCRmyPDF: its command (e.g. ``python -m ocrmypdf``), the Tesseract
    language and thread limit, and the environment it starts from (PATH, locale)."""

    command: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)
    threads: int = 1
    language: str = LANGUAGE


def ocrmypdf_args(tool: OcrTool, src: Path, out: Path, sidecar: Path) -> list[str]:
    """The command line that turns ``src`` into a searchable PDF/A-2b ``out`` and its
    text into ``sidecar``.

    PDF/A comes from OCRmyPDF's own backend, checked by pikepdf's validator: Ghostscript
    never rewrites the text layer (its PDF/A conversion is where accents broke,
    OCRmyPDF #1204, and Debian 12's 10.0.0 refuses ``redo`` there). Ghostscript only
    rasterises the pages for Tesseract: it hands over a bilevel scan's own pixels,
    where pdfium's anti-aliased rendering, thresholded again, read degraded pages at
    about twice the error rate (CER 0.047 against 0.016-0.027, tests/bench/bench_ocr.py).
    ``redo`` OCRs the page images and keeps real text (a certification block) as it
    is. A copy whose pages changed cannot keep the original's signature: the copy
    drops it, and the signed original stays the record."""
    return [
        *tool.command,
        *("--language", tool.language, "--jobs", "1"),
        *("--output-type", "pdfa-2", "--pdfa-backend", "internal"),
        *("--rasterizer", "ghostscript", "--mode", "redo"),
        "--invalidate-digital-signatures",
        "--quiet",
        *("--sidecar", str(sidecar), str(src), str(out)),
    ]


def tool_env(tool: OcrTool, tmpdir: Path) -> dict[str, str]:
    return {
        **tool.env,
        "OMP_THREAD_LIMIT": str(tool.threads),
        "TMPDIR": str(tmpdir),
        "PYTHONUNBUFFERED": "1",
    }


def _telling_line(stderr: str) -> str:
    """The line of a tool's stderr that says why: the first (its own message), or the
    last of a traceback (the exception)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return (lines[-1] if "Traceback" in stderr else lines[0]) if lines else ""


def exit_reason(code: int, stderr: str) -> str:
    """OCRmyPDF's exit code in words, with the line of its stderr that says why."""
    why = _telling_line(stderr)
    words = EXIT_REASONS.get(code, "an unexpected error")
    if code < 0:
        words = f"it was killed by signal {-code}"
    return f"ocrmypdf exit {code}: {words}" + (f" ({why[:200]})" if why else "")


def _die_with_parent() -> None:  # in the child, between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start_ocrmypdf(
    tool: OcrTool, src: Path, out: Path, sidecar: Path, tmpdir: Path, log: Path
) -> subprocess.Popen[bytes]:
    """OCRmyPDF on its way; its stderr goes to ``log``."""
    tmpdir.mkdir(exist_ok=True, mode=0o700)
    with log.open("wb") as err:
        try:
            return subprocess.Popen(
                ocrmypdf_args(tool, src, out, sidecar),
                env=tool_env(tool, tmpdir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # its group: Tesseract goes with it
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (the worker is one thread)
            )
        except OSError as exc:
            raise missing(f"cannot start OCRmyPDF ({exc.strerror})") from None


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """OCRmyPDF and everything it started (its process group), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def missing(what: str) -> MissingDependencyError:
    return MissingDependencyError(
        what,
        "apt-get install tesseract-ocr tesseract-ocr-vie ghostscript and pip install"
        " ocrmypdf, or set [warehouse] ocr = false",
    )


def _answer(name: str, command: list[str], env: Mapping[str, str]) -> str:
    """What ``command`` prints on stdout; ``MissingDependencyError`` naming ``name``
    when it does not run."""
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise missing(f"{name} does not run ({type(exc).__name__}: {exc})") from None
    if done.returncode != 0:
        why = _telling_line(done.stderr)[:200] or "no message"
        raise missing(f"{name} does not run (exit {done.returncode}: {why})")
    return done.stdout


def check_tools(tool: OcrTool) -> str:
    """OCRmyPDF's version, once it, Tesseract with its ``language`` model and
    Ghostscript (the rasteriser) answer; ``MissingDependencyError`` naming what is
    missing otherwise."""
    env = {**tool.env, "OMP_THREAD_LIMIT": str(tool.threads)}
    version = _answer("OCRmyPDF", [*tool.command, "--version"], env).strip()
    langs = _answer("Tesseract", ["tesseract", "--list-langs"], env).split()
    _answer("Ghostscript (gs)", ["gs", "--version"], env)
    if tool.language not in langs:
        raise missing(f"Tesseract has no {tool.language!r} model (tesseract-ocr-{tool.language})")
    return version


def pdf_problem(path: Path) -> str | None:
    """Why ``path`` is not a PDF with pages that OCR could read, or None."""
    import pikepdf

    try:
        with pikepdf.open(path) as pdf:
            return None if len(pdf.pages) else "the PDF has no pages"
    except (pikepdf.PdfError, OSError, ValueError) as exc:
        return f"the original is not a readable PDF ({type(exc).__name__})"


def pdfa_findings(path: Path, flavour: str = "2b") -> list[str]:
    """pikepdf's PDF/A findings on ``path``: the document as pikepdf would save it and
    the bytes as they are (which is what the archive keeps); empty when it passes."""
    import pikepdf
    import pikepdf.pdfa

    try:
        with pikepdf.open(path) as pdf:
            found = [str(f) for f in pikepdf.pdfa.check(pdf, flavour).findings]
        with path.open("rb") as fh:
            found += [str(f) for f in pikepdf.pdfa.validate_written(fh, flavour).findings]
    except (pikepdf.PdfError, ValueError) as exc:
        return [f"pikepdf cannot read it ({type(exc).__name__})"]
    return list(dict.fromkeys(found))
