"""GetModelStatus and GetModelMetadata as protos; front ends only change the wire format.

Responses are ``serving.protos`` messages (no TensorFlow on this module's import path), which
front ends embed or serialize directly. A loaded model's signatures are TensorFlow's own
``SignatureDef`` messages, from another descriptor pool: they cross into the response through
their bytes, once per signature on this (metadata, not inference) path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from serving import protos
from serving.core.model_spec import ModelSpec
from serving.errors import ServingError, invalid_argument, not_found

if TYPE_CHECKING:
    from serving.core.server_core import ServerCore

SIGNATURE_DEF_FIELD = "signature_def"


def model_status(core: ServerCore, spec: ModelSpec) -> protos.GetModelStatusResponse:
    """Statuses of a model's versions. A label narrows to its version (TF Serving ignores it)."""
    try:
        manager = core.manager(spec.name)
    except ServingError:
        raise not_found(f"Could not find any versions of model {spec.name}") from None
    # A traffic split picks a version for inference only: without a version or label, status
    # lists every version, as TF Serving's GetModelStatus does.
    version = core.resolve_version(spec) if spec.version is not None or spec.label else None
    rows = manager.statuses()
    if version is not None:
        rows = [row for row in rows if row[0] == version]
        if not rows:
            raise not_found(f"Could not find version {version} of model {spec.name}")
    elif not rows:
        raise not_found(f"Could not find any versions of model {spec.name}")
    response = protos.GetModelStatusResponse()
    for number, state, error in rows:
        entry = response.model_version_status.add()
        entry.version = number
        entry.state = int(state)
        entry.status.SetInParent()  # TF Serving always prints the status, OK included
        if error is not None:
            entry.status.error_code = int(error.code)
            entry.status.error_message = error.message
    return response


def model_metadata(
    core: ServerCore, spec: ModelSpec, metadata_fields: list[str]
) -> protos.GetModelMetadataResponse:
    if not metadata_fields:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in metadata_fields:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field} is not supported")
    with core.handle(spec) as handle:
        signature_defs = handle.servable.meta_graph.signature_def
        response = protos.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = handle.version
        signature_map = protos.SignatureDefMap()
        for key, signature in signature_defs.items():
            signature_map.signature_def[key].MergeFromString(signature.SerializeToString())
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response
