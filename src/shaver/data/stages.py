"""Pipeline stages in background threads (arrow and numpy release the GIL)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def prefetched(blocks: Iterator[T], depth: int = 2) -> Iterator[T]:
    """The same blocks, read ahead by a background thread (at most ``depth`` waiting).
    An error of the reader is raised here, in its place in the sequence; stopping early
    stops the reader."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for block in blocks:
                if not put(("block", block)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer
            put(("error", exc))
        finally:
            getattr(blocks, "close", lambda: None)()

    thread = threading.Thread(target=produce, name="shaver-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
