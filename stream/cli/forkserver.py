"""The helper process of :class:`~pedsam.stream.fleet.spawner.Spawner`.

The command line forks it (:func:`prestart`) once it has imported torch and before it imports
any of the edge's code: nothing computed yet, no event loop, no gRPC object, so the helper holds
torch without paying its import again, and none of OpenCV, PyAV or aiortc. Where fork alone is
not safe it is a fresh interpreter instead (``python -m pedsam.stream.cli.helper FD``).

It imports the rest of what ``pedsam worker`` imports (:data:`PRELOAD`), computes nothing, starts
no thread, then forks a child per request that runs ``pedsam <argv>`` with the descriptors sent
as its stdin and stdout. The protocol is in the spawner's docstring. It ends when the edge's end
of the socket closes.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

from pedsam.stream.fleet.spawner import MESSAGE, Spawner

Entry = Callable[[list[str]], int]  # pedsam's main: argv -> exit status

# What ``pedsam worker`` imports: the helper imports these before forking, and nothing of the
# edge (a worker process loads no OpenCV, PyAV or aiortc).
PRELOAD = ("torch", "pedsam.stream.cli.main", "pedsam.stream.cli.workers", "pedsam.workers.service")

# Where a process that imported torch cannot safely fork without exec (macOS's system
# frameworks; Python's multiprocessing spawns there for that reason), each child executes a fresh
# ``python -m pedsam.stream`` instead: slower to start, same processes otherwise.
# PEDSAM_WORKERS_EXEC=1 asks for that anywhere (the tests check that path on Linux).
EXEC = sys.platform != "linux" or os.environ.get("PEDSAM_WORKERS_EXEC") == "1"


def prestart(entry: Entry) -> Spawner:
    """A spawner whose helper starts now, forked from this process after ``import torch`` (or
    launched as a fresh interpreter where :data:`EXEC`). Call it before importing the edge."""
    spawner = Spawner()
    if EXEC:
        spawner.launch()
        return spawner
    import torch  # noqa: F401  the import both sides need, paid once

    for stream in (sys.stdout, sys.stderr):  # nothing buffered may be written twice
        stream.flush()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ours.close()
            null = os.open(os.devnull, os.O_RDWR)  # the edge's stdout is not the helper's to hold open
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.close(null)
            serve(theirs, entry)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    theirs.close()
    spawner.adopt_helper(ours, pid)
    return spawner


def serve(channel: socket.socket, entry: Entry) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the edge decides
    for name in () if EXEC else PRELOAD:
        __import__(name)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(channel, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)

    def send(message: dict[str, Any]) -> None:
        try:
            channel.send(json.dumps(message).encode())
        except OSError:
            pass  # the edge is gone; the loop ends at its next read

    while True:
        for key, _ in selector.select():
            if key.fileobj is channel:
                try:
                    data, fds, _, _ = socket.recv_fds(channel, MESSAGE, 2)
                except OSError:
                    data, fds = b"", []
                if not data:
                    return
                try:
                    request = json.loads(data)
                    pid = os.fork()
                except Exception as exc:
                    for fd in fds:
                        os.close(fd)
                    send({"error": str(exc)})
                    continue
                if pid == 0:
                    _child(request, fds, (channel.fileno(), wake_r, wake_w), entry)
                for fd in fds:
                    os.close(fd)
                send({"spawned": pid})
            else:
                os.read(wake_r, 4096)
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    send({"exited": pid, "status": os.waitstatus_to_exitcode(status)})


def _child(request: dict[str, Any], fds: list[int], helper_fds: tuple[int, ...], entry: Entry) -> None:
    """In the forked child: become ``pedsam <argv>`` with the pipes as stdin and stdout. Never
    returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in helper_fds:
            os.close(fd)
        os.dup2(fds[0], 0)
        os.dup2(fds[1], 1)
        for fd in fds:
            os.close(fd)
        if request.get("nice"):
            os.nice(int(request["nice"]))
        if EXEC:
            os.execv(sys.executable, [sys.executable, "-m", "pedsam.stream", *request["argv"]])
        try:  # what ps and top show: the command, not the helper's
            with open("/proc/self/comm", "w") as comm:
                comm.write("pedsam-worker")
        except OSError:
            pass
        code = entry(list(request["argv"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)
