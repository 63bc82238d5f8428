"""Decode many image files at once, with a pool of worker processes when there are many.

Pillow spends most of a small image's time in Python (header parsing), so
threads fight over the GIL; processes scale with the cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np

from engine.datasets.dataset import PROGRESS_INTERVAL, Progress
from engine.datasets.images import decode_image
from engine.errors import DatasetError

# Below this many images, starting worker processes costs more than it saves.
POOL_MIN_IMAGES = 4000
# At most this many worker processes (0: decode in this process only).
MAX_WORKERS = 8
CHUNK_SIZE = 256


def decode_chunk(paths: list[str], size: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
    """Decode a run of files; returns the images and the positions that failed.

    Module-level so worker processes can run it.
    """
    width, height = size
    images = np.zeros((len(paths), height, width, 3), dtype=np.uint8)
    failed = []
    for i, path in enumerate(paths):
        try:
            images[i] = decode_image(path, size)
        except DatasetError:
            failed.append(i)
    return images, failed


def worker_count(count: int) -> int:
    """One worker process per core; this process only feeds them once they run."""
    if count < POOL_MIN_IMAGES or getattr(sys, "frozen", False):
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return min(cpus, MAX_WORKERS) if cpus > 1 else 0


class DecodeWorker:
    """A child Python process that decodes chunks of files for `decode_all`.

    A plain subprocess rather than multiprocessing: spawn-mode multiprocessing
    re-runs the caller's main script in every child (the GUI's imports, or
    all of an unguarded user script); this child imports only engine.datasets.
    Requests and replies are raw bytes, never pickles.
    """

    def __init__(self):
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from engine.datasets.decoding import serve_decoding; serve_decoding()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )

    def decode(self, paths: list[str], size: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
        request = json.dumps({"paths": paths, "size": list(size)}).encode()
        self.process.stdin.write(len(request).to_bytes(4, "little") + request)
        self.process.stdin.flush()
        failed_count = int.from_bytes(self._read(4), "little")
        failed = np.frombuffer(self._read(4 * failed_count), dtype="<i4").tolist()
        width, height = size
        images = np.frombuffer(self._read(len(paths) * height * width * 3), dtype=np.uint8)
        return images.reshape(len(paths), height, width, 3), failed

    def _read(self, count: int) -> bytes:
        data = self.process.stdout.read(count)
        if len(data) != count:
            raise EOFError("the decode worker stopped")
        return data

    def close(self) -> None:
        """Kill first: closing a pipe that a feeder thread is reading would wait for that read."""
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def serve_decoding() -> None:
    """A decode worker's main loop: requests on stdin, images on stdout, until EOF."""
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt a reply
    while len(header := requests.read(4)) == 4:
        request = json.loads(requests.read(int.from_bytes(header, "little")))
        images, failed = decode_chunk(request["paths"], tuple(request["size"]))
        replies.write(len(failed).to_bytes(4, "little") + np.asarray(failed, dtype="<i4").tobytes())
        replies.write(images.tobytes())
        replies.flush()


def _start_workers(count: int) -> list[DecodeWorker]:
    workers = []
    for _ in range(count):
        try:
            workers.append(DecodeWorker())
        except OSError:  # no Python to start (an embedded or frozen app): decode here
            break
    return workers


def decode_all(paths: list[str], size: tuple[int, int], progress: Progress) -> tuple[np.ndarray, list[int]]:
    """Decode every file, with worker processes when there are many.

    A thread per worker process takes chunks from the front. Until a worker
    has delivered, this thread decodes from the back (and takes over chunks
    that workers still hold once none are left), so slow-starting or failing
    workers never make this slower than decoding alone; after that it only
    waits, so the feeder threads get the GIL at once. Only this thread
    reports progress and checks for stop.
    """
    width, height = size
    images = np.empty((len(paths), height, width, 3), dtype=np.uint8)
    failed: set[int] = set()
    starts = list(range(0, len(paths), CHUNK_SIZE))
    changed = threading.Condition()
    workers = _start_workers(worker_count(len(paths)))
    state = {"front": 0, "back": len(starts), "done": 0, "from_workers": 0, "alive": len(workers)}
    finished: set[int] = set()
    held: dict[int, bool] = {}  # chunks a worker was given and not yet finished, in order

    def take(from_front: bool) -> int | None:
        """The next unassigned chunk (call with `changed` held)."""
        if state["front"] >= state["back"]:
            return None
        if from_front:
            state["front"] += 1
            return starts[state["front"] - 1]
        state["back"] -= 1
        return starts[state["back"]]

    def store(start: int, chunk: np.ndarray, bad: list[int], by_worker: bool) -> None:
        with changed:
            held.pop(start, None)
            if start not in finished:
                images[start:start + len(chunk)] = chunk
                failed.update(start + i for i in bad)
                finished.add(start)
                state["done"] += len(chunk)
                state["from_workers"] += by_worker
            changed.notify_all()

    def feed(worker: DecodeWorker) -> None:
        try:
            while True:
                with changed:
                    start = take(from_front=True)
                    if start is None:
                        return
                    held[start] = True
                store(start, *worker.decode(paths[start:start + CHUNK_SIZE], size), by_worker=True)
        except (OSError, ValueError, EOFError):  # the worker died or was closed; its chunk stays held
            pass
        finally:
            with changed:
                state["alive"] -= 1
                changed.notify_all()

    feeders = [threading.Thread(target=feed, args=(worker,), daemon=True) for worker in workers]
    for feeder in feeders:
        feeder.start()
    try:
        while True:
            progress.check_stop()
            with changed:
                if len(finished) == len(starts):
                    break
                if state["from_workers"] and state["alive"]:
                    changed.wait(PROGRESS_INTERVAL)
                    start = None
                else:
                    start = take(from_front=False)
                    if start is None:
                        start = next((s for s in reversed(held) if s not in finished), None)
            if start is not None:
                store(start, *decode_chunk(paths[start:start + CHUNK_SIZE], size), by_worker=False)
            done = state["done"]
            progress.send("load", f"Reading images {done}/{len(paths)}", done / len(paths), force=False)
    finally:
        for worker in workers:
            worker.close()
        for feeder in feeders:
            feeder.join()
    return images, sorted(failed)
