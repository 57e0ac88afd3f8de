"""Which model servers a ``ServingSpec`` asks for, and the runner that starts each one.

``serving_platform`` unset runs this project's server as a subprocess (no image involved);
``local_docker`` and ``kubernetes`` run container images, one validation per tag/digest of
``serving_spec.tensorflow_serving`` as in stock TFX (``serving_bins.parse_serving_binaries``),
and every one must pass. The Docker and Kubernetes runners are imported only when used, so
the default path needs neither client library.
"""

from __future__ import annotations

from absl import logging
from tfx.proto import infra_validator_pb2

from components.infra_validator.runners.base import ModelServerRunner
from components.infra_validator.runners.local_process import LocalProcessRunner

LOCAL_DOCKER = "local_docker"
KUBERNETES = "kubernetes"
# Stock TFX's default image; it only fits local_docker (the Kubernetes runner starts
# ``tfx-model-server``, which exists only in this project's serving image).
DEFAULT_DOCKER_IMAGE = "tensorflow/serving"


def serving_images(serving_spec: infra_validator_pb2.ServingSpec) -> list[str | None]:
    """Image references to validate in turn; ``[None]`` for the bundled local server."""
    platform = serving_spec.WhichOneof("serving_platform")
    binary = serving_spec.tensorflow_serving
    if platform is None:
        if serving_spec.HasField("tensorflow_serving"):
            logging.info(
                "serving_platform is unset: validating with the bundled model server; the "
                "tensorflow_serving images %s are not used.",
                list(binary.tags) + list(binary.digests),
            )
        return [None]
    if platform == KUBERNETES and not binary.image_name:
        raise ValueError(
            "serving_spec.kubernetes needs serving_spec.tensorflow_serving.image_name: the "
            "serving image of this project (it must provide the 'tfx-model-server' command), "
            "e.g. tensorflow_serving=TensorFlowServing(image_name='registry/tfx-model-server', "
            "tags=['0.1.0'])."
        )
    image_name = binary.image_name or DEFAULT_DOCKER_IMAGE
    images = [f"{image_name}:{tag}" for tag in binary.tags]
    images += [f"{image_name}@{digest}" for digest in binary.digests]
    if not images:
        raise ValueError(
            f"serving_spec.{platform} needs at least one image tag or digest in "
            f"serving_spec.tensorflow_serving (tags=[...] or digests=[...]) for {image_name!r}."
        )
    return images


def make_runner(
    serving_spec: infra_validator_pb2.ServingSpec,
    image: str | None,
    model_path: str,
    base_path: str,
    log_path: str,
) -> ModelServerRunner:
    """A runner for one attempt.

    ``model_path`` is the SavedModel directory itself (containers mount it as version 1);
    ``base_path`` is a local ``<base>/<model_name>/1`` layout linking to it, for the subprocess.
    """
    platform = serving_spec.WhichOneof("serving_platform")
    if platform is None:
        return LocalProcessRunner(serving_spec.model_name, base_path, log_path)
    assert image is not None, "container platforms always have an image"
    if platform == LOCAL_DOCKER:
        from components.infra_validator.runners.docker_runner import DockerRunner

        return DockerRunner(
            serving_spec.model_name, model_path, image, serving_spec.local_docker, log_path
        )
    from components.infra_validator.runners.kubernetes_runner import KubernetesRunner

    return KubernetesRunner(
        serving_spec.model_name, model_path, image, serving_spec.kubernetes, log_path
    )
