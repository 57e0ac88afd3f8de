"""Which children the supervisor forwards ``kill -USR1`` (stack dumps) to: only those whose
handler is installed, which for the model process is once its socket has appeared -- and still
after it removed the socket while stopping, the moment a hang is worth a dump."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from serving.multiproc.supervisor import Supervisor
from serving.options import ServerOptions


def test_the_model_process_gets_dumps_from_its_socket_on_even_once_it_removed_it():
    supervisor = Supervisor(ServerOptions(), [], frontends=1)
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        supervisor.model.process = stand_in
        assert not supervisor._started(supervisor.model)  # still loading: USR1 would kill it
        open(supervisor.socket_path, "w").close()
        assert supervisor._started(supervisor.model)
        os.remove(supervisor.socket_path)  # stopping: the host removes its socket first
        assert supervisor._started(supervisor.model)
    finally:
        stand_in.kill()
        stand_in.wait()
        shutil.rmtree(supervisor.runtime_dir, ignore_errors=True)


def test_a_restarted_model_process_is_not_started_by_its_predecessors_socket():
    """A SIGKILLed model process leaves its socket file behind; until the new one creates
    its own, SIGUSR1 (whose handler it has not installed yet) would kill it."""
    supervisor = Supervisor(ServerOptions(), ["--no_such_flag"], frontends=1)  # exits at once
    try:
        open(supervisor.socket_path, "w").close()  # the killed predecessor's
        supervisor.model.listened = True
        supervisor._spawn(supervisor.model)
        assert not supervisor._started(supervisor.model)
    finally:
        if supervisor.model.process is not None:
            supervisor.model.process.kill()
            supervisor.model.process.wait()
        shutil.rmtree(supervisor.runtime_dir, ignore_errors=True)
