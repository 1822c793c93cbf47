"""``python -m mmdeploy_kit.cli``."""

from . import main

main()
