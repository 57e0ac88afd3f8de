"""``tensorflow.serving.ModelService``: model status and config reload over gRPC.

``HandleReloadConfigRequest`` replaces the server's model config like TF Serving's (models
added, removed, policies changed; models that stay keep serving) and, like it, answers only
once the newly added models are AVAILABLE. Unlike it (TF Serving issue #1519), the wait is
bounded: past ``reload_timeout`` or the client's deadline, or as soon as a new model has failed
to load, the call returns an error naming the models and why; loading continues in the
background and the config stays applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import grpc

from serving import protos
from serving.api import model_info
from serving.errors import invalid_argument
from serving.grpc_api import request_spec, rpc

if TYPE_CHECKING:
    from serving.core.server_core import ServerCore

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext

DEFAULT_RELOAD_TIMEOUT_SECONDS = 60.0


class ModelServicer:
    def __init__(
        self, core: ServerCore, reload_timeout: float = DEFAULT_RELOAD_TIMEOUT_SECONDS
    ) -> None:
        self._core = core
        self._reload_timeout = reload_timeout
        self._reload_lock = asyncio.Lock()  # one reload at a time, as TF Serving's config mutex

    @rpc
    async def GetModelStatus(
        self, request: protos.GetModelStatusRequest, context: Context
    ) -> protos.GetModelStatusResponse:
        # No name check here in TF Serving: an empty name is "Could not find any versions".
        return model_info.model_status(self._core, request_spec(request, require_name=False))

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
        async with self._reload_lock:
            added = self._added_models(config)
            # Off the event loop: applying takes the core's lock and unloads removed models.
            await asyncio.to_thread(self._core.apply_config, config)
            await asyncio.to_thread(
                self._core.wait_until_available, added, time.monotonic() + budget
            )
        response = protos.ReloadConfigResponse()
        response.status.SetInParent()  # error_code OK, as TF Serving's ToStatusProto(OK)
        return response

    def _added_models(self, config: protos.ModelServerConfig) -> list[str]:
        """Models the new config loads afresh: new names, or a known name at a new base path."""
        current = set(self._core.model_names())
        return [
            model.name
            for model in config.model_config_list.config
            if model.name not in current
            or self._core.model_config(model.name).base_path != model.base_path
        ]
