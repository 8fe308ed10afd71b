"""``python -m console <command>``: Django's management commands for the console."""

import os
import sys


def main() -> None:
    """Run a management command, as ``manage.py`` does."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["podium", *sys.argv[1:]])


if __name__ == "__main__":
    main()
