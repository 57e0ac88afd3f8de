"""The Pusher's own keys, declared once (the stock ``PusherSpec`` keys come from TFX's
``standard_component_specs``): its two extra parameters and the custom property it adds to the
``PushedModel`` beyond the stock ``pushed`` / ``pushed_destination`` / ``pushed_version``."""

# Execution parameters beyond the stock PusherSpec.
KEEP_LAST_VERSIONS_KEY = "keep_last_versions"
STALE_INCOMING_SECONDS_KEY = "stale_incoming_seconds"

# Custom properties of the PushedModel (the stock ones are set by _MarkPushed).
PUSHED_AT_KEY = "pushed_at"
MANIFEST_DIGEST_KEY = "manifest_digest"
