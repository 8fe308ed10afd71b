"""``python -m podium.agent``: the same as ``podium agent``."""

from podium.agent.cli import main

raise SystemExit(main())
