"""Episode videos: RGB frames -> one mp4 per episode (OpenCV), and a virtual X display for renderers that need one.

Videos are VP9 in an MP4 container: the encoder OpenCV's pip wheels ship, and a format browsers (Chrome, Firefox,
Edge) and OpenCV both play. Files are written under a temporary name and renamed when complete.

Example:
    >>> import numpy as np
    >>> from marlkit.video import VideoWriter
    >>> with VideoWriter("/tmp/demo.mp4", fps=10) as video:
    ...     video.add(np.zeros((64, 64, 3), np.uint8))
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from envs.errors import ConfigError

FOURCC = "vp09"
DISPLAY_SIZE = (640, 480, 24)


class VideoWriter:
    """Writes RGB uint8 frames (H, W, 3) to `path`; the file appears only when `close()` completes."""

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        self.fps = fps
        self.frames = 0
        self._staging = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self._writer = None

    def add(self, frame: np.ndarray) -> None:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"video frames must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            height, width = frame.shape[:2]
            self._writer = cv2.VideoWriter(str(self._staging), cv2.VideoWriter_fourcc(*FOURCC), self.fps, (width, height))
            if not self._writer.isOpened():
                raise ConfigError(f"OpenCV cannot write {FOURCC} video to {self.path.parent}")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            os.replace(self._staging, self.path)
            self._writer = None

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._staging.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            self.close()
        else:
            self.abort()


@contextlib.contextmanager
def virtual_display(needed: bool):
    """Runs the block with a private Xvfb display when `needed` and no DISPLAY is set; stops it afterwards."""
    if not needed or os.environ.get("DISPLAY"):
        yield None
        return
    if shutil.which("Xvfb") is None:
        raise ConfigError(
            "rendering needs an X display, DISPLAY is not set and Xvfb is not installed; "
            "install it (apt-get install xvfb) or set DISPLAY"
        )
    from xvfbwrapper import Xvfb

    width, height, depth = DISPLAY_SIZE
    with Xvfb(width=width, height=height, colordepth=depth) as display:
        yield display
