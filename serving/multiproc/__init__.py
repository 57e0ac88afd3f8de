"""Front-end processes around one model process (``--frontend_processes``).

Why: one CPython process parses, decodes and encodes every request under one GIL, so a server
used one core of Python whatever its host had (issue 14's figures: REST at a third of the bare
HTTP stack's rate, gRPC intake serialized in grpc.aio). TF Serving and Triton use every core
from one process; the Python peers copy the model into every worker instead (N copies in
memory, N CUDA contexts, batches split N ways). Here the request path is spread over processes
and the model is not:

- ``supervisor``: the parent. Starts the model process, then the front ends once the initial
  loads are done (TF Serving's rule: the ports open when the models can answer); restarts
  whichever dies; SIGTERM drains the front ends, then the model process; children die with it.
- ``frontend``: REST and gRPC on the shared ports (``SO_REUSEPORT``): parsing, decoding,
  encoding, TLS, auth, limits. Never imports TensorFlow (``serving.protos``).
- ``model_process``: the one owner of versions, loading, warmup, batching (merging requests
  from every front end), devices and metadata reporting; ``host`` serves the front ends' calls.
- ``remote``: the front end's side of the dataplane (what ``InferenceService`` is in one
  process), ``snapshot``: the model metadata front ends decode against, ``protocol``: the
  small control messages. Tensors travel through shared memory (``serving.ipc``).
"""
