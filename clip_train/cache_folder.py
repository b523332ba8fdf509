"""A folder written once under a shared cache, safely when several processes race to write it.

The embedded datasets, learnt tokenizers and drawn evaluation sets are named by everything that decides their
content, so two processes that both find the folder missing write the same files. Each writes into a staging
folder beside it and renames that into place: the rename is atomic, the first one wins, and the loser's copy is
dropped. A reader therefore never sees a half-written folder, even after a killed run.
"""

import os
import shutil
import tempfile
from collections.abc import Callable


def write_folder_once(folder: str, write_into: Callable[[str], None]) -> str:
    """`folder`, written by `write_into(staging)` unless it exists already; returns `folder`."""
    if os.path.isdir(folder):
        return folder
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}-", dir=parent)
    try:
        write_into(staging)
        os.rename(staging, folder)
    except OSError:
        if not os.path.isdir(folder):  # another process winning the rename is fine; anything else is not
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
