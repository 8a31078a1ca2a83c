"""python-team-labels as a component of Tollgate's `policy` world: the bindings
componentize-py generates from `wit/policy.wit`, around `rules.py`.
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import log, types

import rules


class WitWorld(wit_world.WitWorld):
    def validate_settings(self, settings: str) -> None:
        try:
            rules.required_labels(settings)
        except rules.SettingsError as error:
            raise Err(str(error))

    def evaluate(self, request: str, settings: str) -> types.Verdict:
        reason = rules.decide(request, settings)
        if reason is None:
            return types.Verdict(True, None, None, [], [], None)
        log.log(log.Level.INFO, reason)
        return types.Verdict(False, reason, None, [], [], None)
