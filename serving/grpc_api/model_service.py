"""``tensorflow.serving.ModelService``: model status and config reload over gRPC.

``HandleReloadConfigRequest`` replaces the server's model config like TF Serving's (models
added, removed, policies changed; models that stay keep serving) and, like it, answers only
once the newly added models are AVAILABLE. Unlike it (TF Serving issue #1519), the wait is
bounded: past ``reload_timeout`` or the client's deadline, or as soon as a new model has failed
to load, the call returns an error naming the models and why; loading continues in the
background and the config stays applied.
"""

from __future__ import annotations

import logging

import grpc

from serving import protos
from serving.api.types import Dataplane
from serving.errors import invalid_argument
from serving.grpc_api import request_spec, rpc

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext

DEFAULT_RELOAD_TIMEOUT_SECONDS = 60.0


class ModelServicer:
    def __init__(
        self, dataplane: Dataplane, reload_timeout: float = DEFAULT_RELOAD_TIMEOUT_SECONDS
    ) -> None:
        self._dataplane = dataplane
        self._reload_timeout = reload_timeout

    @rpc
    async def GetModelStatus(
        self, request: protos.GetModelStatusRequest, context: Context
    ) -> protos.GetModelStatusResponse:
        # No name check here in TF Serving: an empty name is "Could not find any versions".
        return await self._dataplane.model_status(request_spec(request, require_name=False))

    @rpc
    async def HandleReloadConfigRequest(
        self, request: protos.ReloadConfigRequest, context: Context
    ) -> protos.ReloadConfigResponse:
        config = request.config
        if config.WhichOneof("config") != "model_config_list":
            raise invalid_argument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported"
            )
        for model in config.model_config_list.config:
            log.info(
                "Reload config entry: name=%s base_path=%s platform=%s",
                model.name,
                model.base_path,
                model.model_platform,
            )
        remaining = context.time_remaining()
        budget = self._reload_timeout if remaining is None else min(self._reload_timeout, remaining)
        await self._dataplane.reload_config(config, budget)
        response = protos.ReloadConfigResponse()
        response.status.SetInParent()  # error_code OK, as TF Serving's ToStatusProto(OK)
        return response
