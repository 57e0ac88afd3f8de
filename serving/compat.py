"""The few library calls whose spelling differs between the two stacks the server runs on.

The serving runtime runs on the TFX 1.16 stack (Python 3.10, TensorFlow 2.16, protobuf 3.20,
numpy 1.x) and on the current serving-only stack (Python 3.12, TensorFlow 2.21, protobuf 5+,
numpy 2); see docs/stacks.md. Where a library renamed or removed a call between them, the rest
of the code calls the helper here instead, so there is exactly one place that knows both
spellings. Each helper picks by feature (is the new name there?), not by version number, so a
third version that keeps either spelling needs no change.
"""

from __future__ import annotations

import inspect
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

# protobuf 4.21 added message_factory.GetMessageClass and 5.x removed the
# MessageFactory.GetPrototype method that protobuf 3.20 has (and only has).
_GET_MESSAGE_CLASS = getattr(message_factory, "GetMessageClass", None)

# protobuf 5.26 renamed MessageToDict's including_default_value_fields to
# always_print_fields_with_no_presence, and 26.x removed the old name. For the proto3 messages
# the server prints (no `optional` scalars) both print the same fields.
_PRINT_DEFAULTS_ARG = (
    "always_print_fields_with_no_presence"
    if "always_print_fields_with_no_presence"
    in inspect.signature(json_format.MessageToDict).parameters
    else "including_default_value_fields"
)


def message_class(descriptor: Descriptor) -> type[Message]:
    """The generated class of a message declared at run time in a descriptor pool."""
    if _GET_MESSAGE_CLASS is not None:
        return _GET_MESSAGE_CLASS(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


def message_to_dict_with_defaults(message: Message, **kwargs: Any) -> dict[str, Any]:
    """``json_format.MessageToDict`` printing fields left at their default (TF Serving does)."""
    return json_format.MessageToDict(message, **{_PRINT_DEFAULTS_ARG: True}, **kwargs)
