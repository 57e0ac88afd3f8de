"""FeedbackExampleGen's driver: decides what this execution covers, from MLMD.

TFX hands a component's driver the pipeline's MLMD connection before the executor runs; stock
ExampleGen's driver uses that hook to resolve its span and version. This one reads the cursor of
the node's newest *published* output (so a failed execution never advances it), snapshots each
prediction index's newest label, and passes both to the executor as exec properties — the
executor itself needs no MLMD, which is what TFX's executors are designed around.

It also records where the rows come from as INPUT events of this execution: the ``PushedModel``
each contributing version was served from (found through the server's ``serving.ModelServing``
records, else among the pipeline's pushes) and the ``serving.PredictionLog`` shards. That makes
"served version -> its predictions and feedback -> Examples -> next Trainer" a path of events
that any MLMD lineage tool follows (TFX's Importer driver writes MLMD the same way).
"""

from __future__ import annotations

import json

import ml_metadata as mlmd
from absl import logging
from tfx.dsl.components.base import base_driver
from tfx.orchestration import data_types_utils, metadata
from tfx.orchestration.portable import base_driver as ir_base_driver
from tfx.orchestration.portable import data_types as portable_data_types
from tfx.proto.orchestration import driver_output_pb2, pipeline_pb2

from components.feedback_example_gen import state as s
from serving.metadata.mlmd_records import MlmdRecords, quote

_NODE_CONTEXT = "node"
_PIPELINE_CONTEXT = "pipeline"
_RUN_CONTEXT = "pipeline_run"


class Driver(base_driver.BaseDriver, ir_base_driver.BaseDriver):
    """Portable-launcher driver (``run``); the legacy base keeps BaseComponent's contract."""

    def __init__(self, metadata_handle: metadata.Metadata) -> None:
        base_driver.BaseDriver.__init__(self, metadata_handle)
        ir_base_driver.BaseDriver.__init__(self, metadata_handle)

    def run(
        self, execution_info: portable_data_types.ExecutionInfo
    ) -> driver_output_pb2.DriverOutput:
        props = execution_info.exec_properties
        model = props[s.MODEL_NAME_KEY]
        log_dirs = s.decode_log_dirs(props[s.PREDICTION_LOG_DIRS_KEY])
        node = execution_info.pipeline_node
        with self._mlmd_connection as handle:
            store = handle.store
            previous = previous_output(store, context_name(node, _NODE_CONTEXT))
            cursor_from = s.decode_cursor(
                previous.custom_properties[s.CURSOR_PROPERTY].string_value if previous else None
            )
            span = previous.properties["span"].int_value + 1 if previous else 1
            allowed = None
            if (props.get(s.VERSIONS_KEY) or s.ALL_VERSIONS) == s.PIPELINE_VERSIONS:
                allowed = pipeline_versions(store, context_name(node, _PIPELINE_CONTEXT))
            cursor_to, rows = s.read_rows(model, log_dirs, cursor_from, allowed)
            records = MlmdRecords(store)
            sources = records.feedback_sources(
                model,
                sorted({r.version for r in rows}),
                sorted({r.episode_id for r in rows if r.episode_id}),
                sorted({r.shard_id for r in rows if r.shard_id}),
            )
            current = current_execution(
                store, context_name(node, _NODE_CONTEXT), execution_info.pipeline_run_id
            )
            records.link_inputs(current.id, sources)
        logging.info(
            "FeedbackExampleGen %s: span %d covers %d labelled rows after cursor %s up to %s "
            "(versions: %s)",
            model,
            span,
            len(rows),
            cursor_from,
            cursor_to,
            "all" if allowed is None else allowed,
        )
        result = driver_output_pb2.DriverOutput()
        for key, value in {
            s.SPAN_KEY: span,
            s.CURSOR_FROM_KEY: s.encode_cursor(cursor_from),
            s.CURSOR_TO_KEY: s.encode_cursor(cursor_to),
            s.ALLOWED_VERSIONS_KEY: json.dumps(allowed),
        }.items():
            data_types_utils.set_metadata_value(result.exec_properties[key], value)
        return result


def context_name(node: pipeline_pb2.PipelineNode, context_type: str) -> str:
    """The name of the node's context of ``context_type`` as the compiler set it."""
    for query in node.contexts.contexts:
        if query.type.name == context_type:
            return query.name.field_value.string_value
    raise ValueError(f"Node {node.node_info.id} has no {context_type!r} context")


def current_execution(store: mlmd.MetadataStore, node_context: str, run_id: str):
    """The execution the launcher registered for this node in this run (TFX's launcher keeps
    one per node and pipeline run, and does not pass its id to drivers)."""
    found = store.get_executions(
        list_options=mlmd.ListOptions(
            filter_query=f"contexts_n.type = '{_NODE_CONTEXT}' AND contexts_n.name = "
            f"'{quote(node_context)}' AND contexts_r.type = '{_RUN_CONTEXT}' AND "
            f"contexts_r.name = '{quote(run_id)}'"
        )
    )
    if len(found) != 1:
        raise RuntimeError(
            f"Expected one execution of {node_context} in run {run_id}, found {len(found)}"
        )
    return found[0]


def previous_output(store: mlmd.MetadataStore, node_context: str):
    """The newest published (LIVE) output of this node, or None on its first execution."""
    found = store.get_artifacts(
        list_options=mlmd.ListOptions(
            limit=1,
            order_by=mlmd.OrderByField.ID,
            is_asc=False,
            filter_query=f"type = 'Examples' AND state = LIVE AND contexts_n.type = "
            f"'{_NODE_CONTEXT}' AND contexts_n.name = '{quote(node_context)}'",
        )
    )
    return found[0] if found else None


def pipeline_versions(store: mlmd.MetadataStore, pipeline_context: str) -> list[str]:
    """Versions this pipeline pushed (``PushedModel`` with ``pushed`` = 1 in its context)."""
    pushed = store.get_artifacts(
        list_options=mlmd.ListOptions(
            filter_query=f"type = 'PushedModel' AND contexts_p.type = '{_PIPELINE_CONTEXT}' "
            f"AND contexts_p.name = '{quote(pipeline_context)}'"
        )
    )
    return sorted(
        {
            a.custom_properties["pushed_version"].string_value
            for a in pushed
            if a.custom_properties["pushed"].int_value == 1
        }
    )
