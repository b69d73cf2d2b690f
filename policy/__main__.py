"""The baseline as a policy pack: `pulumi preview --policy-pack policy`.

Only the pack is built here: constructing PolicyPack starts the policy server and blocks, so the
validators live in rules.py, where the tests import them.
"""

from pulumi_policy import EnforcementLevel, PolicyPack

from rules import POLICIES

PolicyPack(
    name="webinfra-baseline",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=POLICIES,
)
