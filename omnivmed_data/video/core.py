"""The one error the video readers and the clip segmenter raise."""

from __future__ import annotations

from pathlib import Path

# The categories a rejects report counts (``VideoError.reason``).
REASONS: tuple[str, ...] = (
    "unreadable_video",  # not a video PyAV can open or decode (random bytes, no video stream, no frame rate)
    "truncated_video",  # the file ends before a frame its container promises
    "missing_frame",  # a frame index the video or frame folder does not have
    "unreadable_frame",  # a frame file of a frame folder that does not decode
    "empty_folder",  # a frame folder without any <...int>.png/.jpg frame
    "duplicate_frame",  # two files of a frame folder carry the same index (1.png and 001.png)
    "mixed_frame_sizes",  # the frames of one clip differ in size
    "before_start",  # a clip that runs past the start (or, centred, past the end) with at_start="drop"
)


class VideoError(ValueError):
    """A video, frame folder or clip that cannot be used. ``file`` names the culprit (relative or
    absolute as the caller passed it), ``reason`` is a short category for the rejects report and
    ``detail`` says what is wrong without absolute paths or object addresses, so that the same
    input gives the same message on every run."""

    def __init__(self, reason: str, file: str, detail: str):
        super().__init__(f"{file}: {detail}")
        self.reason = reason
        self.file = file
        self.detail = detail

    def __reduce__(self):  # picklable across process pools
        return (type(self), (self.reason, self.file, self.detail))


def ffmpeg_message(err: BaseException, *paths: Path | str) -> str:
    """FFmpeg's/PyAV's message without the file name it quotes (the caller names the file)."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    for path in paths:
        text = text.replace(str(path), Path(path).name)
    return text.strip()
