"""Cross-cutting plumbing: errors, component heartbeats, health, status page, process supervisor."""
