#!/bin/sh
# tfx-model-server's container entry point, TF Serving's conventions:
#   gRPC on 8500, REST on 8501, the model $MODEL_BASE_PATH/$MODEL_NAME (default /models/model),
#   every argument passed through to the server, where a repeated flag overrides these defaults
#   (e.g. --rest_api_port=9000, --model_config_file=/models/models.config,
#   --file_system_poll_wait_seconds=5).
# The server reads MODEL_NAME / MODEL_BASE_PATH itself for flags that are not given, so
# --model_config_file (or an explicit --model_base_path) simply takes precedence, as in TF
# Serving, where the config file wins over --model_name/--model_base_path.
# A first argument that is not a flag runs that command instead (e.g. `... image sh`).
# `exec` keeps the server the process that receives SIGTERM (tini, PID 1, forwards it).
set -e
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
  exec tfx-model-server --port=8500 --rest_api_port=8501 "$@"
fi
exec "$@"
