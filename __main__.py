"""webinfra: settings → components → exports. Everything else lives in stack.py and components/."""

import pulumi

from settings import Settings
from stack import define_stack

for name, value in define_stack(Settings.from_pulumi_config()).items():
    pulumi.export(name, value)
