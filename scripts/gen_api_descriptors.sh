#!/usr/bin/env bash
# Regenerates serving/protos/api_descriptors.binpb, the FileDescriptorSet the TF-free API
# messages (serving/protos) are built from, from the vendored .proto files in
# serving/protos/proto. Needs grpcio-tools (protoc) in some Python; it is not a dependency of
# the project, because the committed descriptor set is plain protobuf wire data that every
# protobuf runtime reads:
#   uv venv /tmp/protoc && uv pip install -p /tmp/protoc/bin/python grpcio-tools
#   PROTOC_PYTHON=/tmp/protoc/bin/python scripts/gen_api_descriptors.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PROTOC_PYTHON:-python3}"
root=serving/protos/proto
mapfile -t apis < <(cd "$root" && find tensorflow_serving -name '*.proto' | LC_ALL=C sort)
"$python" -m grpc_tools.protoc -I "$root" --include_imports \
  --descriptor_set_out=serving/protos/api_descriptors.binpb "${apis[@]}"
echo "wrote serving/protos/api_descriptors.binpb ($(stat -c %s serving/protos/api_descriptors.binpb) bytes)"
