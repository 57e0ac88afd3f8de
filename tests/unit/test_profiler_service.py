import pytest
from tensorflow.tsl.profiler.protobuf import profiler_options_pb2, xplane_pb2

from serving.grpc_api.profiler import (
    ProfileRequest,
    is_empty,
    session_options,
    trace_path,
)


def test_trace_path_is_tsl_save_xspace_layout():
    assert trace_path("/logs/plugins/profile", "2026_01_01", "localhost:8500") == (
        "/logs/plugins/profile/2026_01_01/localhost_8500.xplane.pb"
    )


@pytest.mark.parametrize(("session", "host"), [("../up", "h"), ("..", "h"), ("s", "a/b")])
def test_names_cannot_leave_the_repository_root(session, host):
    with pytest.raises(ValueError, match="must be a plain name"):
        trace_path("/logs", session, host)


def test_session_options_follow_the_request_or_tf_defaults():
    opts = profiler_options_pb2.ProfileOptions(
        version=1, host_tracer_level=3, device_tracer_level=0, python_tracer_level=1
    )
    assert session_options(opts) == {
        "host_tracer_level": 3,
        "device_tracer_level": 0,
        "python_tracer_level": 1,
    }
    assert session_options(profiler_options_pb2.ProfileOptions()) == {}


def test_is_empty_means_no_event_in_any_line():
    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    plane.lines.add()
    assert is_empty(space)
    plane.lines.add().events.add(metadata_id=1)
    assert not is_empty(space)


def test_request_messages_parse_tf_clients_wire_format():
    # Field numbers from tsl/profiler/protobuf/profiler_service.proto; 3 (tools) is skipped.
    request = ProfileRequest(repository_root="/r", session_id="s", host_name="h")
    request.opts.duration_ms = 1000
    wire = request.SerializeToString() + b"\x1a\x0ctrace_viewer"
    parsed = ProfileRequest.FromString(wire)
    assert (parsed.repository_root, parsed.opts.duration_ms) == ("/r", 1000)
