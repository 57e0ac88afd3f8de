"""The supervisor's relay of its children's SIGUSR1 stack dumps (``serving.multiproc.stack_dumps``),
with real processes that register ``faulthandler`` on their pipe as a server's children do."""

from __future__ import annotations

import io
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time

from serving.multiproc.protocol import STACK_DUMP_FD_ENV
from serving.multiproc.stack_dumps import StackDumpRelay

WAIT_SECONDS = 30.0

# A child as the server's children are: its dump handler on the pipe it was given. It starts
# `threads` threads named by `tag` (so its frames say whose they are), says "ready" on stdout,
# and answers each line on stdin with "alive" (its dump did not block it).
CHILD = textwrap.dedent(
    """
    import faulthandler, signal, sys, threading

    fd, tag, threads, depth = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    faulthandler.register(signal.SIGUSR1, file=fd, all_threads=True)
    stop = threading.Event()

    def nest(level):
        return nest(level - 1) if level else stop.wait()

    exec(f"def {tag}_waits():\\n    nest({depth})")
    for _ in range(threads):
        threading.Thread(target=globals()[f"{tag}_waits"], daemon=True).start()
    print("ready", flush=True)
    for _ in sys.stdin:
        print("alive", flush=True)
    """
)


class _Child:
    def __init__(self, relay: StackDumpRelay, tag: str, threads: int = 3, depth: int = 5):
        read_end, write_end = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(write_end), tag, str(threads), str(depth)],
            pass_fds=(write_end,),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        os.close(write_end)
        relay.watch(read_end, self.process.pid)
        assert self._line() == "ready"

    def alive(self) -> bool:
        self.process.stdin.write("?\n")
        self.process.stdin.flush()
        return self._line() == "alive"

    def _line(self) -> str:
        ready, _, _ = select.select([self.process.stdout], [], [], WAIT_SECONDS)
        assert ready, "the child did not answer"
        return self.process.stdout.readline().strip()

    def end(self) -> None:
        self.process.kill()
        self.process.wait()


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _frames_of(output: str, name: str) -> int:
    """How many of the lines written under ``[name]`` are frames of ``name``'s threads."""
    return sum(
        1 for line in output.splitlines() if line.startswith(f"[{name}] ") and "_waits" in line
    )


def test_dumps_signalled_at_once_come_out_as_whole_lines_of_their_own_process():
    out = io.StringIO()
    names: dict[int, str] = {}
    relay = StackDumpRelay(lambda pid: names[pid], out)
    relay.start()
    children = {tag: _Child(relay, tag) for tag in ("alpha", "beta", "gamma")}
    try:
        for tag, child in children.items():
            names[child.process.pid] = tag
        for dumps in range(1, 6):
            for child in children.values():
                child.process.send_signal(signal.SIGUSR1)
            # Each child has 3 waiting threads: 3 frames of its `<tag>_waits` per dump.
            expected = 3 * dumps
            _wait_for(
                lambda expected=expected: all(
                    _frames_of(out.getvalue(), t) == expected for t in children
                ),
                f"dump {dumps}: not every child's relayed:\n{out.getvalue()}",
            )
        output = out.getvalue()
        frame = re.compile(r'  File ".*", line \d+ in [\w<>]+$')
        for line in output.splitlines():
            name, _, text = line.partition("] ")
            assert name.lstrip("[") in children, line
            # A whole line of faulthandler's, and the frames named for a process are its own.
            assert (
                frame.match(text)
                or re.match(
                    r"(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):$", text
                )
                or text == ""
            ), line
            if "_waits" in text:
                assert f"in {name.lstrip('[')}_waits" in text, line
        assert all(child.alive() for child in children.values())
    finally:
        for child in children.values():
            child.end()
        relay.stop()


def test_a_dump_larger_than_a_pipe_buffer_does_not_block_the_child():
    out = io.StringIO()
    relay = StackDumpRelay(lambda pid: "big", out)
    relay.start()
    # 60 threads 90 frames deep: several hundred kB of dump, past the pipe's 64 kB.
    child = _Child(relay, "deep", threads=60, depth=90)
    try:
        child.process.send_signal(signal.SIGUSR1)
        assert child.alive()
        _wait_for(lambda: _frames_of(out.getvalue(), "big") == 60, "the dump was not relayed whole")
        assert len(out.getvalue()) > 1 << 16
    finally:
        child.end()
        relay.stop()


def test_a_child_is_named_as_it_is_when_its_lines_are_written():
    """A spare that took a slot since it started is named by the slot."""
    out = io.StringIO()
    names: dict[int, str] = {}
    relay = StackDumpRelay(lambda pid: names[pid], out)
    relay.start()
    child = _Child(relay, "renamed")
    try:
        names[child.process.pid] = "frontend-3"  # after `watch`, as a hand-over comes
        child.process.send_signal(signal.SIGUSR1)
        _wait_for(lambda: _frames_of(out.getvalue(), "frontend-3") == 3, out.getvalue())
    finally:
        child.end()
        relay.stop()


def test_stop_writes_what_was_dumped_and_a_last_line_without_its_newline():
    out = io.StringIO()
    relay = StackDumpRelay(lambda pid: f"pid {pid}", out)
    relay.start()
    read_end, write_end = os.pipe()
    relay.watch(read_end, 42)
    os.write(write_end, b"Thread 0x1 (most recent call first):\n  cut sh")
    relay.stop()
    os.close(write_end)
    assert out.getvalue() == "[pid 42] Thread 0x1 (most recent call first):\n[pid 42]   cut sh\n"


def test_a_process_a_child_starts_does_not_hold_the_childs_dump_pipe_open():
    """A server's child takes its dump pipe from the environment as its own: a process it
    starts (inheriting whatever is inheritable) must not keep the pipe open once the child has
    exited, or the relay would never see the child's end of it."""
    read_fd, write_fd = os.pipe()
    script = textwrap.dedent(
        """
        import subprocess, sys
        from serving.cli import _stack_dump_file
        _stack_dump_file()
        grandchild = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"], close_fds=False
        )
        print(grandchild.pid, flush=True)
        """
    )
    env = {**os.environ, STACK_DUMP_FD_ENV: str(write_fd)}
    child = subprocess.Popen(
        [sys.executable, "-c", script], env=env, pass_fds=(write_fd,), stdout=subprocess.PIPE
    )
    os.close(write_fd)
    grandchild = int(child.stdout.readline())
    try:
        assert child.wait(WAIT_SECONDS) == 0
        readable, _, _ = select.select([read_fd], [], [], WAIT_SECONDS)
        assert readable, "the pipe stayed open after the child exited: its child holds it"
        assert os.read(read_fd, 1) == b""
    finally:
        os.kill(grandchild, signal.SIGKILL)
        child.stdout.close()
        os.close(read_fd)
