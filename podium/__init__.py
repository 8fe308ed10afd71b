"""The node and client side of Podium: CLI, agent and training SDK (never imports Django)."""
