"""Users, workspaces (teams), memberships with roles, and API tokens."""
