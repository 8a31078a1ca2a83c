"""team-labels, in Python: objects must carry the labels the settings list.

A component of Tollgate's `policy` world (sdk/wit/policy.wit), built with
componentize-py; the classes and functions it uses are the bindings
componentize-py generates from that world.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import log, types


def settings_of(text: str) -> list[str]:
    """The label keys the settings require, or the reason they are wrong."""
    try:
        settings = json.loads(text)
    except ValueError as error:
        raise Err(f"settings are not JSON: {error}")
    labels = settings.get("requiredLabels") if isinstance(settings, dict) else None
    if not isinstance(labels, list) or not labels:
        raise Err("requiredLabels must list at least one label key")
    if not all(isinstance(key, str) and key for key in labels):
        raise Err("requiredLabels must hold non-empty strings")
    return labels


class WitWorld(wit_world.WitWorld):
    def validate_settings(self, settings: str) -> None:
        settings_of(settings)

    def evaluate(self, request: str, settings: str) -> types.Verdict:
        required = settings_of(settings)
        review = json.loads(request)
        obj = review.get("object") or {}
        labels = (obj.get("metadata") or {}).get("labels") or {}
        missing = [key for key in required if key not in labels]
        if not missing:
            return types.Verdict(True, None, None, [], [], None)
        kind = obj.get("kind", "object")
        name = (obj.get("metadata") or {}).get("name", "")
        log.log(log.Level.INFO, f"{kind} {name} lacks {', '.join(missing)}")
        return types.Verdict(
            False,
            f'{kind} "{name}" lacks the label(s) {", ".join(missing)}',
            None,
            [],
            [],
            None,
        )
