"""``python -m serving`` == ``tfx-model-server``."""

from serving.cli import main

raise SystemExit(main())
