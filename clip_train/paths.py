"""Where the Hydra configs live: `configs/` beside the package in a source checkout, or
`clip_train/configs/` inside an installed wheel (pyproject.toml copies them there)."""

import os

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_INSTALLED = os.path.join(_PACKAGE_DIR, "configs")
CONFIG_DIR = _INSTALLED if os.path.isdir(_INSTALLED) else os.path.join(os.path.dirname(_PACKAGE_DIR), "configs")
