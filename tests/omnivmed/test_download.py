"""Downloads against a local HTTP server: resume, retries, checksums, safe unzip, receipts."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from omnivmed.builders.base import Builder, BuilderItem, DownloadFile, LayoutError, SourceInfo
from omnivmed.builders.vqa_rad import JSON_NAME, VqaRadBuilder
from omnivmed import download as dl
from omnivmed.download import (
    RECEIPT_NAME,
    DownloadError,
    adopt_local,
    download_source,
    extract_zip,
    fetch_file,
)
from omnivmed.data.fileio import sha256_file

VQA_RAD = Path(__file__).resolve().parents[2] / "data" / "vqa_rad"
BODY = bytes(range(256)) * 40  # 10 KiB, every byte value, so offsets matter


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- a small server with Range support and scripted misbehaviour ------------------


class ServerState:
    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.fail_next = 0  # answer this many requests with 503 first
        self.truncate_next = 0  # send half the body of this many requests, then hang up
        self.ignore_range = False
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        state: ServerState = self.server.state
        with state.lock:
            state.requests.append((self.path, self.headers.get("Range")))
            if state.fail_next:
                state.fail_next -= 1
                self.send_error(503)
                return
            truncate = state.truncate_next > 0
            state.truncate_next -= truncate
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = self._range_start(state)
        if start is not None and start >= len(body):
            self.send_error(416)
            return
        self.send_response(200 if start is None else 206)
        if start is not None:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        payload = body[start or 0 :]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2] if truncate else payload)

    def _range_start(self, state: ServerState) -> int | None:
        header = self.headers.get("Range")
        if not header or state.ignore_range:
            return None
        return int(header.removeprefix("bytes=").split("-")[0])

    def log_message(self, *args):  # keep pytest output quiet
        pass


@pytest.fixture
def server():
    """A server on 127.0.0.1:<free port>, shut down after the test."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = ServerState({"/data.bin": BODY})
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def fetch(server, dest: Path, path: str = "/data.bin", **kwargs) -> str:
    kwargs.setdefault("progress", False)
    kwargs.setdefault("backoff_base", 0)
    return fetch_file(server.url + path, dest, **kwargs)


# --- fetch_file ----------------------------------------------------------------


def test_full_download_verifies_and_renames(server, tmp_path):
    dest = tmp_path / "sub" / "data.bin"
    digest = fetch(server, dest, sha256=sha(BODY), size=len(BODY))
    assert digest == sha(BODY)
    assert dest.read_bytes() == BODY
    assert not dl.part_path(dest).exists()
    assert server.state.requests == [("/data.bin", None)]


def test_existing_verified_file_is_not_fetched_again(server, tmp_path):
    dest = tmp_path / "data.bin"
    fetch(server, dest, sha256=sha(BODY))
    fetch(server, dest, sha256=sha(BODY))
    assert len(server.state.requests) == 1


def test_resumes_from_part_with_range(server, tmp_path):
    dest = tmp_path / "data.bin"
    dl.part_path(dest).write_bytes(BODY[:3000])
    fetch(server, dest, sha256=sha(BODY))
    assert server.state.requests == [("/data.bin", "bytes=3000-")]
    assert dest.read_bytes() == BODY


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.state.ignore_range = True
    dest = tmp_path / "data.bin"
    dl.part_path(dest).write_bytes(b"garbage that must not survive")
    fetch(server, dest, sha256=sha(BODY))
    assert server.state.requests[0][1] is not None  # it asked to resume
    assert dest.read_bytes() == BODY


def test_dropped_connection_is_resumed_on_retry(server, tmp_path):
    server.state.truncate_next = 1
    dest = tmp_path / "data.bin"
    fetch(server, dest, sha256=sha(BODY), retries=2)
    half = len(BODY) // 2
    assert server.state.requests == [("/data.bin", None), ("/data.bin", f"bytes={half}-")]
    assert dest.read_bytes() == BODY


def test_complete_part_answered_416_is_finished(server, tmp_path):
    dest = tmp_path / "data.bin"
    dl.part_path(dest).write_bytes(BODY)
    assert fetch(server, dest, sha256=sha(BODY)) == sha(BODY)
    assert dest.read_bytes() == BODY


def test_503_is_retried_until_success(server, tmp_path):
    server.state.fail_next = 2
    dest = tmp_path / "data.bin"
    fetch(server, dest, sha256=sha(BODY), retries=3)
    assert len(server.state.requests) == 3
    assert dest.read_bytes() == BODY


def test_retries_exhausted_raises(server, tmp_path):
    server.state.fail_next = 10
    with pytest.raises(DownloadError, match="gave up after 2 attempts.*503"):
        fetch(server, tmp_path / "data.bin", retries=1)
    assert len(server.state.requests) == 2


def test_404_raises_naming_url_without_retry(server, tmp_path):
    with pytest.raises(DownloadError) as err:
        fetch(server, tmp_path / "missing.bin", path="/missing.bin", retries=3)
    assert server.url + "/missing.bin" in str(err.value)
    assert "404" in str(err.value)
    assert len(server.state.requests) == 1


def test_sha256_mismatch_raises_and_removes_part(server, tmp_path):
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        fetch(server, dest, sha256=wrong)
    message = str(err.value)
    assert "data.bin" in message and wrong in message and sha(BODY) in message
    assert not dl.part_path(dest).exists()
    assert not dest.exists()


def test_size_mismatch_raises_and_removes_part(server, tmp_path):
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match=f"expected {len(BODY) + 1} bytes, got {len(BODY)}"):
        fetch(server, dest, size=len(BODY) + 1)
    assert not dl.part_path(dest).exists()


def test_backoff_grows_and_is_jittered():
    delays = [dl.backoff_delay(attempt, 1.0) for attempt in range(4)]
    for attempt, delay in enumerate(delays):
        assert 0.5 * 2**attempt <= delay <= 1.5 * 2**attempt


# --- extract_zip -------------------------------------------------------------------


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("evil", ["../evil", "a/../../evil", "/abs/evil"])
def test_extract_zip_refuses_escaping_members(tmp_path, evil):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(zip_bytes({"fine.txt": b"ok", evil: b"x"}))
    into = tmp_path / "out" / "inner"
    with pytest.raises(DownloadError, match=f"refusing zip member '{evil}'"):
        extract_zip(archive, into)
    assert not (tmp_path / "out" / "evil").exists()
    assert not (tmp_path / "evil").exists()
    assert not (into / "fine.txt").exists()  # checked before anything is written


def test_extract_zip_is_idempotent(tmp_path):
    archive = tmp_path / "good.zip"
    archive.write_bytes(zip_bytes({"d/a.txt": b"a", "d/./b.txt": b"b"}))
    into = tmp_path / "out"
    extract_zip(archive, into)
    assert (into / "d" / "a.txt").read_bytes() == b"a"
    (into / "d" / "a.txt").write_bytes(b"edited")
    extract_zip(archive, into)  # marker present: not redone
    assert (into / "d" / "a.txt").read_bytes() == b"edited"
    assert [p.name for p in into.glob(".extracted-good.zip-*")]


# --- download_source ---------------------------------------------------------------


class FakeBuilder(Builder):
    """Needs notes.json and images/a.png; its info is set per test (the URL has a port)."""

    def __init__(self, info: SourceInfo):
        self.info = info

    def check_layout(self, raw: Path) -> None:
        if not (raw / "notes.json").is_file() or not (raw / "images" / "a.png").is_file():
            raise LayoutError(f"{raw}: expected notes.json and images/a.png")

    def input_files(self, raw: Path) -> list[Path]:
        return [raw / "notes.json"]

    def generate(self, raw: Path) -> Iterator[BuilderItem]:
        return iter(())


def fake_info(**kwargs) -> SourceInfo:
    return SourceInfo(name="fake", description="d", homepage="https://example.org/fake", license="CC0-1.0",
                      citation="c", **kwargs)


NOTES = b'{"rows": []}'
IMAGES_ZIP = zip_bytes({"images/a.png": b"\x89PNG fake"})


def served_source(server) -> FakeBuilder:
    server.state.files.update({"/notes.json": NOTES, "/images.zip": IMAGES_ZIP})
    return FakeBuilder(fake_info(downloads=(
        DownloadFile(server.url + "/notes.json", "notes.json", sha256=sha(NOTES), size=len(NOTES)),
        DownloadFile(server.url + "/images.zip", "images.zip", sha256=sha(IMAGES_ZIP), extract=True),
    )))


def test_download_source_fetches_extracts_and_writes_receipt(server, tmp_path):
    builder = served_source(server)
    to = tmp_path / "raw" / "fake"
    assert download_source(builder, to, progress=False) == to
    builder.check_layout(to)
    receipt = json.loads((to / RECEIPT_NAME).read_text())
    assert receipt == {
        "source": "fake",
        "obtained": {"method": "http", "urls": [server.url + "/notes.json", server.url + "/images.zip"]},
        "files": [
            {"path": "images.zip", "bytes": len(IMAGES_ZIP), "sha256": sha(IMAGES_ZIP)},
            {"path": "notes.json", "bytes": len(NOTES), "sha256": sha(NOTES)},
        ],
    }

    # A second run fetches nothing and writes the same receipt byte for byte.
    before, requests = (to / RECEIPT_NAME).read_bytes(), len(server.state.requests)
    download_source(builder, to, progress=False)
    assert len(server.state.requests) == requests
    assert (to / RECEIPT_NAME).read_bytes() == before


def test_download_source_layout_failure_writes_no_receipt(server, tmp_path):
    server.state.files["/notes.json"] = NOTES
    builder = FakeBuilder(fake_info(downloads=(DownloadFile(server.url + "/notes.json", "notes.json"),)))
    with pytest.raises(LayoutError):
        download_source(builder, tmp_path / "fake", progress=False)
    assert not (tmp_path / "fake" / RECEIPT_NAME).exists()


@pytest.mark.parametrize("kwargs", [{"gated": True, "hf_repo": "org/gated"}, {}])
def test_gated_or_unscriptable_source_says_how_to_get_it(tmp_path, kwargs):
    with pytest.raises(DownloadError) as err:
        download_source(FakeBuilder(fake_info(**kwargs)), tmp_path / "fake", progress=False)
    message = str(err.value)
    assert "--from" in message and "https://example.org/fake" in message
    assert "\n" not in message
    assert not (tmp_path / "fake").exists()


def test_download_source_from_hf_snapshot(tmp_path, monkeypatch):
    """snapshot_download replaced by a fake that lays out files as the hub client does."""
    import huggingface_hub

    calls = []

    def fake_snapshot_download(*, repo_id, repo_type, local_dir, **kwargs):
        calls.append((repo_id, repo_type, Path(local_dir)))
        root = Path(local_dir)
        (root / "images").mkdir(parents=True)
        (root / "images" / "a.png").write_bytes(b"png")
        (root / "notes.json").write_bytes(NOTES)
        meta = root / ".cache" / "huggingface" / "download" / "notes.json.metadata"
        meta.parent.mkdir(parents=True)
        meta.write_text("abc123commit\netag\n0.0\n")
        return str(root)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    to = tmp_path / "fake"
    download_source(FakeBuilder(fake_info(hf_repo="org/fake")), to, progress=False)
    assert calls == [("org/fake", "dataset", to)]
    receipt = json.loads((to / RECEIPT_NAME).read_text())
    assert receipt["obtained"] == {"method": "huggingface", "hf_repo": "org/fake", "revision": "abc123commit"}
    assert [f["path"] for f in receipt["files"]] == ["images/a.png", "notes.json"]


# --- adopt_local -------------------------------------------------------------------


def test_adopt_local_links_vendored_vqa_rad(tmp_path):
    to = tmp_path / "raw" / "vqa_rad"
    assert adopt_local(VqaRadBuilder(), VQA_RAD, to) == to
    assert to.is_symlink() and to.resolve() == VQA_RAD.resolve()
    assert not (VQA_RAD / RECEIPT_NAME).exists()  # nothing written into the user's copy
    receipt_path = tmp_path / "raw" / f"vqa_rad.{RECEIPT_NAME}"
    receipt = json.loads(receipt_path.read_text())
    json_file = VQA_RAD / JSON_NAME
    assert receipt == {
        "source": "vqa_rad",
        "obtained": {"method": "local", "path": str(VQA_RAD.resolve())},
        "files": [{"path": JSON_NAME, "bytes": json_file.stat().st_size, "sha256": sha256_file(json_file)}],
    }
    adopt_local(VqaRadBuilder(), VQA_RAD, to)  # again: the same link is fine
    assert receipt_path.read_text() == json.dumps(receipt, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_adopt_local_refuses_an_existing_other_folder(tmp_path):
    to = tmp_path / "vqa_rad"
    to.mkdir()
    with pytest.raises(DownloadError, match="already exists"):
        adopt_local(VqaRadBuilder(), VQA_RAD, to)
    assert not to.is_symlink()


def test_adopt_local_empty_folder_raises_layout_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    to = tmp_path / "raw" / "vqa_rad"
    with pytest.raises(LayoutError):
        adopt_local(VqaRadBuilder(), empty, to)
    assert not to.exists() and not to.is_symlink()


def test_download_refuses_to_write_into_an_adopted_copy(tmp_path):
    to = tmp_path / "vqa_rad"
    adopt_local(VqaRadBuilder(), VQA_RAD, to)
    builder = FakeBuilder(fake_info(downloads=(DownloadFile("http://127.0.0.1:9/x", "x"),)))
    with pytest.raises(DownloadError, match="adopted copy"):
        download_source(builder, to, progress=False)
