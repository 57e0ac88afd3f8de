"""Model status, metadata and config reload as the core answers them, for any front end.

``HandleReloadConfigRequest`` replaces the server's model config like TF Serving's (models
added, removed, policies changed; models that stay keep serving) and, like it, answers only
once the newly added models are AVAILABLE. Unlike it (TF Serving issue #1519), the wait is
bounded by the budget the front end passes (its reload timeout or the client's deadline), and
it ends early once a new model has failed to load; loading continues in the background and the
config stays applied.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.core.server_core import ServerCore


class ConfigReloader:
    def __init__(self, core: ServerCore) -> None:
        self._core = core
        self._lock = asyncio.Lock()  # one reload at a time, as TF Serving's config mutex

    async def reload(self, config: Any, budget_seconds: float) -> None:
        """Applies ``config`` (a ModelServerConfig of either proto pool), then waits up to
        ``budget_seconds`` for the models it adds."""
        async with self._lock:
            added = self._added_models(config)
            # Off the event loop: applying takes the core's lock and unloads removed models.
            await asyncio.to_thread(self._core.apply_config, config)
            await asyncio.to_thread(
                self._core.wait_until_available, added, time.monotonic() + budget_seconds
            )

    def _added_models(self, config: Any) -> list[str]:
        """Models the new config loads afresh: new names, or a known name at a new base path."""
        current = set(self._core.model_names())
        return [
            model.name
            for model in config.model_config_list.config
            if model.name not in current
            or self._core.model_config(model.name).base_path != model.base_path
        ]
