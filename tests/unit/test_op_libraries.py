import pytest

from serving.errors import Code
from serving.servables.op_libraries import (
    OpLibraryError,
    load_op_library,
    missing_op_error,
    parse_op_libraries,
)

TF_MESSAGE = (
    "Op type not registered 'ConstrainedSequence' in binary running on host. Make sure the Op "
    "and Kernel are registered in the binary running in this process.\nmore"
)


def test_flag_is_a_comma_separated_list():
    assert parse_op_libraries(" a.b , /x/_ops.so,,") == ["a.b", "/x/_ops.so"]
    assert parse_op_libraries("") == []


def test_unregistered_op_becomes_an_actionable_not_found():
    error = missing_op_error(TF_MESSAGE)
    assert error is not None and error.code == Code.NOT_FOUND
    assert error.message.startswith("The model uses op 'ConstrainedSequence'")
    assert "pip install 'tfx-serving-suite[text]'" in error.message
    assert "--custom_op_libraries=" in error.message
    assert error.message.endswith(
        "in binary running on host. Make sure the Op and Kernel are "
        "registered in the binary running in this process."
    )
    assert missing_op_error("SavedModel file does not exist at /m/1") is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("/nonexistent/_ops.so", "no such op library file: /nonexistent/_ops.so"),
        ("no_such_module_for_ops", "cannot import Python module 'no_such_module_for_ops'"),
    ],
)
def test_unloadable_libraries_say_why(spec, message):
    with pytest.raises(OpLibraryError, match=message):
        load_op_library(spec)


def test_a_file_that_is_no_op_library_is_refused(tmp_path):
    fake = tmp_path / "_fake_ops.so"
    fake.write_bytes(b"not an ELF file")
    with pytest.raises(OpLibraryError, match="built against this TensorFlow"):
        load_op_library(str(fake))
