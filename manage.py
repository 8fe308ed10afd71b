#!/usr/bin/env python
"""Django's command-line utility for the Podium console."""

from console.__main__ import main

if __name__ == "__main__":
    main()
