"""What Kubeflow Pipelines v2 hands an executor: artifact lists in the executor input JSON."""

from __future__ import annotations

import json


def kfp_artifact(uri: str, title: str, metadata: dict | None = None) -> dict:
    """One input/output artifact list as the KFP v2 launcher writes it for TFX's entry point."""
    return {
        "artifacts": [
            {
                "uri": uri,
                "name": f"projects/1/locations/l/metadataStores/default/artifacts/{abs(hash(uri))}",
                "type": {"instanceSchema": f"title: {title}\ntype: object\n"},
                "metadata": metadata or {},
            }
        ]
    }


def run_kfp_v2_executor(executor_class_path: str, executor_input: dict) -> None:
    """Runs an executor in-process through TFX's KFP v2 container entry point, as a
    KubeflowV2DagRunner step does (its outputs land in ``executor_input``'s outputFile)."""
    # Imported here: tests/support is imported by every test, and TFX takes ~25 s to import.
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor

    kubeflow_v2_run_executor.main(
        kubeflow_v2_run_executor._parse_flags(
            [
                "--executor_class_path",
                executor_class_path,
                "--json_serialized_invocation_args",
                json.dumps(executor_input),
            ]
        )
    )
