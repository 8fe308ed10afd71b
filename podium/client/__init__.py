"""The ``podium`` client commands: submit, list, follow and cancel jobs through the REST API.

Standard library and PyYAML only, so it installs on a laptop next to nothing else.
"""
