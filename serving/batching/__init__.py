"""Dynamic batching: BatchingParameters, one shared batch scheduler, batched servables."""
