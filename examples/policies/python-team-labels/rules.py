"""python-team-labels: every object the policy is given must carry the labels its
settings list (`requiredLabels`). Plain Python, so that its tests run
natively (`python3 -m unittest`); `app.py` binds it to Tollgate's world.
"""

import json


class SettingsError(ValueError):
    """Settings that cannot work, and why."""


def required_labels(text: str) -> list[str]:
    """The label keys the settings require."""
    try:
        settings = json.loads(text)
    except ValueError as error:
        raise SettingsError(f"settings are not JSON: {error}") from error
    labels = settings.get("requiredLabels") if isinstance(settings, dict) else None
    if not isinstance(labels, list) or not labels:
        raise SettingsError(
            'requiredLabels is empty, so the policy checks nothing: list labels such as "team"'
        )
    if not all(isinstance(key, str) and key for key in labels):
        raise SettingsError("requiredLabels must hold non-empty strings")
    return labels


def decide(request: str, settings: str) -> str | None:
    """Why the AdmissionRequest (JSON text) is refused, or None."""
    required = required_labels(settings)
    obj = json.loads(request).get("object") or {}
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    missing = [key for key in required if key not in labels]
    if not missing:
        return None
    kind = obj.get("kind", "object")
    return f'{kind} "{metadata.get("name", "")}" lacks the label(s) {", ".join(missing)}'
