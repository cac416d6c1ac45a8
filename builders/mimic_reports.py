"""FINDINGS and IMPRESSION out of a MIMIC-CXR free-text report.

The reports (``files/pXX/pSUBJECT/sSTUDY.txt``) are semi-structured: a
``FINAL REPORT`` line, then sections whose headers are upper-case words
followed by a colon at the start of a line (``EXAMINATION:``, ``INDICATION:``,
``TECHNIQUE:``, ``COMPARISON:``, ``FINDINGS:``, ``IMPRESSION:``). Like the
MIMIC-CXR authors' own section parser (mimic-cxr ``txt/section_parser.py``),
a header runs to the next header, header spellings are normalised (typos,
``CONCLUSION``, ``FINDINGS AND IMPRESSION``) and empty sections are ignored.
Unlike it, no other header (``CHEST, PA AND LATERAL:`` titles, the last
paragraph of a report without sections) is taken for findings: a report
without a FINDINGS or IMPRESSION section is reported, not guessed at.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z ()/,&-]*[A-Z)])[ \t]*:", re.MULTILINE)

# Normalised header -> the section it is. Typos are the ones the MIMIC-CXR parser lists.
SECTION_NAMES: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "findings/ impression": "impression",
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
}
SECTIONS: tuple[str, ...] = ("findings", "impression")


def report_sections(text: str) -> dict[str, str]:
    """``{"findings": ..., "impression": ...}`` for the sections the report has (whitespace collapsed)."""
    headers = list(_HEADER.finditer(text))
    found: dict[str, list[str]] = {}
    for number, match in enumerate(headers):
        name = SECTION_NAMES.get(" ".join(match.group(1).lower().split()))
        if name is None:
            continue
        end = headers[number + 1].start() if number + 1 < len(headers) else len(text)
        body = " ".join(text[match.end() : end].split())
        if body:
            found.setdefault(name, []).append(body)
    return {name: " ".join(parts) for name, parts in found.items()}


def report_text(sections: dict[str, str], wanted: tuple[str, ...]) -> str:
    """The wanted sections in order, each under its header; '' when the report has none of them."""
    parts = [f"{name.upper()}: {sections[name]}" for name in wanted if name in sections]
    if len(parts) == 1 and len(wanted) == 1:
        return sections[wanted[0]]
    return "\n".join(parts)
