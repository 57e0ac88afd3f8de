"""Inter-process transport between front-end processes and the model process (issue 14).

Two parts, neither importing TensorFlow (a front end must start in well under a second):

- **Tensors through shared memory** (``arena``, ``tensors``): each process owns an ``Arena``, an
  anonymous ``memfd`` it writes tensors into; the peer maps the same memory from the file
  descriptor it received and reads the arrays as zero-copy numpy views. One copy in, no
  pickling. Why a memfd passed over the control socket (``SCM_RIGHTS``) rather than
  ``multiprocessing.shared_memory``: a memfd has no name in ``/dev/shm``, so a crashed process
  leaves nothing to clean up (the kernel frees the memory when the last process holding the fd
  or a mapping exits); it is not limited by a container's 64 MB ``/dev/shm``; and it is sparse,
  so a large capacity costs only the pages requests actually touch (freed blocks of 1 MiB or
  more are handed back with ``MADV_REMOVE``).
- **Control messages** (``channel``): length-prefixed orjson frames over a connected unix stream
  socket, with file descriptors riding along a frame when needed, an RPC client that
  multiplexes concurrent calls by id, and a server loop that runs each request as a task.

Linux only (``memfd_create``, ``MADV_REMOVE``, ``SCM_RIGHTS``), which is where the server runs.
The modules import each other only through duck typing, so each stays usable on its own.
"""
