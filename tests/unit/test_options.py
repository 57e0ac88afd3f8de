import pytest

from serving.options import OptionsError, parse_options


def test_tf_serving_defaults_and_flag_styles():
    options, ignored = parse_options(
        [
            "--model_base_path=/models/m",
            "--rest_api_port=8501",
            "--enable_model_warmup=false",
            "--rest_api_enable_cors_support",
            "--flush_filesystem_caches=true",
            "--enable_profiler=false",
            "--prefer_tflite_model",
        ],
        environ={},
    )
    assert options.port == 8500
    assert options.rest_api_port == 8501
    assert options.model_name == "default"
    assert options.file_system_poll_wait_seconds == 1
    assert options.rest_api_timeout_in_ms == 30000
    assert options.enable_model_warmup is False
    assert options.rest_api_enable_cors_support is True
    assert ignored == ["flush_filesystem_caches"]
    assert options.enable_profiler is False
    assert options.prefer_tflite_model is True
    assert (options.num_tflite_pools, options.num_tflite_interpreters_per_pool) == (0, 1)


def test_container_environment_fills_model_name_and_base_path():
    options, _ = parse_options([], environ={"MODEL_NAME": "taxi", "MODEL_BASE_PATH": "/models/"})
    assert options.model_name == "taxi"
    assert options.model_base_path == "/models/taxi"
    flags_win, _ = parse_options(
        ["--model_name=a", "--model_base_path=/x"], environ={"MODEL_NAME": "taxi"}
    )
    assert (flags_win.model_name, flags_win.model_base_path) == ("a", "/x")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "model_base_path and server_options.model_config_file are empty"),
        (["--model_base_path=/m", "--model_config_file=/c"], "either --model_base_path"),
        (["--model_base_path=/m", "--port=0"], "No API is enabled"),
        (["--model_base_path=/m", "--rest_api_port=8500"], "must differ"),
        (["--model_base_path=/m", "--batching_parameters_file=/b"], "requires --enable_batching"),
        (["--model_base_path=/m", "--mixed_precision=bfloat16"], "not supported"),
        (["--model_base_path=/m", "--num_tflite_pools=-1"], "num_tflite_pools must be >= 0"),
        (["--model_base_path=/m", "--num_tflite_interpreters_per_pool=0"], "must be >= 1"),
        (["--model_base_path=/m", "--custom_op_libraries=/no/_ops.so"], "no such op library"),
        (["--model_base_path=/m", "--per_process_gpu_memory_fraction=2"], "between 0 and 1"),
        (["--model_base_path=/m", "--max_request_memory_bytes=-1"], "must be >= 0"),
        (["--model_base_path=/m", "--rest_api_body_timeout_in_ms=-5"], "must be >= 0"),
        (["--model_base_path=/m", "--rest_api_keep_alive_timeout_in_ms=0"], "must be > 0"),
        (["--model_base_path=/m", "--frontend_spare=-1"], "frontend_spare must be >= 0"),
        (
            ["--model_base_path=/m", "--max_total_request_memory_bytes=1000"],
            "must be at least --max_request_memory_bytes",
        ),
        (
            ["--model_base_path=/m", "--max_request_memory_bytes=0"],
            "must be at least --max_request_memory_bytes",
        ),
    ],
)
def test_invalid_command_lines_explain_themselves(argv, message):
    with pytest.raises(OptionsError, match=message):
        parse_options(argv, environ={})


def test_bad_boolean_is_rejected():
    with pytest.raises(SystemExit):
        parse_options(["--model_base_path=/m", "--enable_batching=maybe"], environ={})


def test_request_hardening_defaults():
    """Bounded by default (TF Serving has none of these; docs/serving.md "Limits" says why)."""
    options, _ = parse_options(["--model_base_path=/m"], environ={})
    assert options.max_request_memory_bytes == 1024**3
    assert options.max_total_request_memory_bytes == 3 * 1024**3
    assert options.rest_api_header_timeout_in_ms == 10_000
    assert options.rest_api_body_timeout_in_ms == 60_000
    assert options.rest_api_keep_alive_timeout_in_ms == 30_000
    assert options.rest_api_max_header_bytes == 65_536
    unlimited, _ = parse_options(
        [
            "--model_base_path=/m",
            "--max_request_memory_bytes=0",
            "--max_total_request_memory_bytes=0",
            "--rest_api_header_timeout_in_ms=0",
        ],
        environ={},
    )
    assert unlimited.max_request_memory_bytes == unlimited.max_total_request_memory_bytes == 0
