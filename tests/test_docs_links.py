"""The README and docs/ pages link only to files that exist, and the README stays short.

Every Markdown link and image (``[text](target)``, ``![alt](target)``) in
README.md and docs/*.md is resolved against the folder of the file that holds
it (any ``#anchor`` stripped); web and mail links and pure ``#anchor`` links are
left alone. Links inside fenced code blocks and inline code spans are not links.
README.md is at most 12,500 bytes and links every docs/*.md page.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_LIMIT = 12_500

# [text](target) or ![alt](target), with an optional "title" after the target.
LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\(\s*(?P<target><[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+).*?\1")
EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")  # http:, https:, mailto:, ...


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link and image outside code."""
    found = []
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            found.append((number, match.group("target").strip("<>")))
    return found


def local_target(target: str) -> str | None:
    """The file part of a relative link; None for web/mail links and pure anchors."""
    if EXTERNAL.match(target) or target.startswith("#"):
        return None
    return target.split("#", 1)[0] or None


def broken_links(markdown: Path, text: str | None = None) -> list[str]:
    """'FILE:LINE: target' for each relative link whose file does not exist."""
    text = markdown.read_text(encoding="utf-8") if text is None else text
    problems = []
    for number, target in links(text):
        path = local_target(target)
        if path is not None and not (markdown.parent / path).exists():
            problems.append(f"{markdown.relative_to(REPO).as_posix()}:{number}: {target}")
    return problems


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def test_link_parser_reports_a_broken_link():
    text = (
        "See [the docs](docs/training.md#labels), ![a figure](figures/nowhere.png) and\n"
        "[the web](https://example.org/x.md), [mail](mailto:a@b.c), [here](#real-use).\n"
        "`[not a link](missing-in-code-span.md)`\n"
        "```\n[not a link either](missing-in-fence.md)\n```\n"
        '[titled](docs/absent.md "a title")\n'
    )
    assert links(text) == [
        (1, "docs/training.md#labels"),
        (1, "figures/nowhere.png"),
        (2, "https://example.org/x.md"),
        (2, "mailto:a@b.c"),
        (2, "#real-use"),
        (7, "docs/absent.md"),
    ]
    assert [local_target(t) for _, t in links(text)] == [
        "docs/training.md", "figures/nowhere.png", None, None, None, "docs/absent.md",
    ]
    # Resolved as if the text were the README: the image and the absent page are
    # reported, whatever docs/training.md's state; the web, mail and anchor links never are.
    problems = broken_links(README, text)
    assert "README.md:1: figures/nowhere.png" in problems
    assert "README.md:7: docs/absent.md" in problems
    assert not any("example.org" in p or "mailto" in p or "#real-use" in p for p in problems)


def test_every_relative_link_exists():
    pages = [README, *doc_pages()]
    problems = [problem for page in pages for problem in broken_links(page)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_is_short():
    size = README.stat().st_size
    assert size <= README_LIMIT, f"README.md is {size:,} bytes; at most {README_LIMIT:,} (move detail into docs/)"


def test_readme_links_every_docs_page():
    pages = doc_pages()
    assert pages, "docs/ holds no page"
    linked = {
        (README.parent / path).resolve()
        for _, target in links(README.read_text(encoding="utf-8"))
        if (path := local_target(target)) is not None
    }
    missing = [page.relative_to(REPO).as_posix() for page in pages if page.resolve() not in linked]
    assert not missing, f"README.md does not link: {', '.join(missing)}"
