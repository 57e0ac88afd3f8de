"""One hardened server shared by the robustness tests, and helpers to watch its memory.

Small limits and short deadlines make each hostile case cheap and quick to observe; a server
without them would be the one that fails (a shape that fills GiBs, a body that never ends).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.support.models import write_half_plus_two, write_slow_loop, write_tf2_scale
from tests.support.server_process import ServerProcess

MIB = 1024 * 1024
PER_REQUEST_MEMORY = 64 * MIB
TOTAL_MEMORY = 96 * MIB
MAX_REQUEST_BYTES = 32 * MIB
TIMEOUT_MS = 1000
MAX_HEADER_BYTES = 16 * 1024
HARDENED_FLAGS = [
    f"--max_request_memory_bytes={PER_REQUEST_MEMORY}",
    f"--max_total_request_memory_bytes={TOTAL_MEMORY}",
    f"--max_request_bytes={MAX_REQUEST_BYTES}",
    f"--rest_api_header_timeout_in_ms={TIMEOUT_MS}",
    f"--rest_api_body_timeout_in_ms={TIMEOUT_MS}",
    f"--rest_api_keep_alive_timeout_in_ms={TIMEOUT_MS}",
    f"--rest_api_max_header_bytes={MAX_HEADER_BYTES}",
]
_UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


@dataclass
class Memory:
    """The server's resident memory: peak growth since :meth:`reset`, from /proc/<pid>/status,
    summed over its processes -- with ``--frontend_processes`` the supervisor, the model process
    and the front ends, where requests are decoded. The sum of each process's peak is at least
    the peak of their sum, so a bound on it holds for the server as a whole."""

    pid: int

    def _processes(self) -> list[int]:
        pids, queue = [], [self.pid]
        while queue:
            pid = queue.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").iterdir():
                queue.extend(int(child) for child in (task / "children").read_text().split())
        return pids

    @staticmethod
    def _kib(pid: int, key: str) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def reset(self) -> None:
        self._base = {}
        for pid in self._processes():
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            self._base[pid] = self._kib(pid, "VmRSS")

    def _growth_mib(self, key: str) -> float:
        return sum(self._kib(pid, key) - base for pid, base in self._base.items()) / 1024

    def peak_growth_mib(self) -> float:
        return self._growth_mib("VmHWM")

    def __repr__(self) -> str:  # shown when a bound fails: peak and what is still held
        held = self._growth_mib("VmRSS")
        return f"Memory(peak +{self.peak_growth_mib():.0f} MiB, now +{held:.0f} MiB)"


@pytest.fixture(scope="session")
def robust_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("robustness")
    write_half_plus_two(str(root / "half_plus_two" / "123"))
    write_tf2_scale(str(root / "scale" / "1"))
    write_slow_loop(str(root / "slow" / "1"))
    entries = "".join(
        f'config {{ name: "{name}" base_path: "{root / name}" model_platform: "tensorflow" }}\n'
        for name in ("half_plus_two", "scale", "slow")
    )
    (root / "models.config").write_text(f"model_config_list {{\n{entries}}}\n")
    return root


@pytest.fixture(scope="session")
def hardened(robust_store) -> Iterator[ServerProcess]:
    with ServerProcess(
        [f"--model_config_file={robust_store / 'models.config'}", *HARDENED_FLAGS], grpc=True
    ) as server:
        yield server


@pytest.fixture(scope="session")
def memory(hardened) -> Memory:
    return Memory(hardened.process.pid)


@pytest.fixture(scope="session")
def channel(hardened) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{hardened.grpc_port}", options=_UNLIMITED) as chan:
        grpc.channel_ready_future(chan).result(timeout=30)
        yield chan


def raw_call(channel: grpc.Channel, method: str, data: bytes, timeout: float = 30):
    """``method`` (``/package.Service/Method``) with ``data`` as the message, as-is."""
    return channel.unary_unary(method)(data, timeout=timeout)


def good_predictions(server: ServerProcess) -> bool:
    status, body = server.request("POST", "/v1/models/half_plus_two:predict", {"instances": [2.0]})
    return (status, body) == (200, b'{"predictions":[3.0]}')


def good_grpc_predict(channel: grpc.Channel) -> bool:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    tensor = request.inputs["x"]
    tensor.dtype = 1  # DT_FLOAT
    tensor.tensor_shape.dim.add().size = 1
    tensor.float_val.append(2.0)
    response = predict_pb2.PredictResponse.FromString(
        raw_call(
            channel, "/tensorflow.serving.PredictionService/Predict", request.SerializeToString()
        )
    )
    return list(response.outputs["y"].float_val) == [3.0]
