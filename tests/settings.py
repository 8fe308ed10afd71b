"""The console's settings for the test run, with the data directory outside the repository.

pytest-django imports the settings before any conftest runs, so the data directory
is chosen here: ``PODIUM_DATA_DIR`` when the caller sets one (``make test`` does),
else a temporary directory removed when the run ends.
"""

import atexit
import os
import shutil
import tempfile

if not os.environ.get("PODIUM_DATA_DIR"):
    _data_dir = tempfile.mkdtemp(prefix="podium-tests-")
    os.environ["PODIUM_DATA_DIR"] = _data_dir
    atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)

from console.settings import *  # noqa: F403

# Hashing passwords at full strength would dominate the run; tests only need them checked.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
