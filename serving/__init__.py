"""A TensorFlow-Serving-compatible model server in Python.

Concepts follow TF Serving: a storage *source* discovers versions, a *loader* turns a version
directory into a *servable*, a *manager* moves versions through their lifecycle, and the API
front ends (REST, gRPC) share one inference core. Nothing here imports tfx or apache-beam.
"""

from serving.version import __version__

__all__ = ["__version__"]
