"""Sources and sinks: what the pipeline reads from and writes to.

Every source (:class:`~vidlight.io.files.FileSource`, :class:`~vidlight.io.live.LiveSource`,
:class:`~vidlight.io.live.ImageDirSource`) is a :class:`Source`; every sink (files, segmented
recordings, RTSP/RTMP publishing, image folders, ``null``, the frame iterator's queue) is a
:class:`Sink`. The pipeline relies on these members only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from vidlight.io.files import Frame, VideoInfo


@runtime_checkable
class Source(Protocol):
    """Decoded frames and the packets of streams to copy, in presentation order."""

    info: VideoInfo
    copy_streams: list  # input streams (audio, subtitles) whose packets are passed through
    corrupt_packets: int  # packets or images skipped as unreadable
    reconnects: int  # times a live source came back after an outage (0 for others)
    live: bool  # read at the sender's pace: frames may be dropped, the source may reconnect

    @property
    def name(self) -> str: ...

    def __iter__(self) -> Iterator[Frame | Any]: ...  # Frame, av.Packet, or live.Reconnected

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Where enhanced frames go; ``close(complete=False)`` leaves no half-written output."""

    frames_written: int
    output: Any  # what it writes to, for messages

    def write(self, rgb: np.ndarray, pts: int | None) -> None: ...

    def mux_packet(self, packet: Any) -> None: ...

    def close(self, *, complete: bool = True) -> None: ...
