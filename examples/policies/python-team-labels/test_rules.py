"""`python3 -m unittest`: the rule, natively."""

import json
import unittest

import rules

SETTINGS = json.dumps({"requiredLabels": ["team"]})


def request(labels: dict) -> str:
    return json.dumps(
        {"object": {"kind": "Pod", "metadata": {"name": "train", "labels": labels}}}
    )


class RulesTest(unittest.TestCase):
    def test_a_labelled_object_is_admitted(self):
        self.assertIsNone(rules.decide(request({"team": "vision"}), SETTINGS))

    def test_a_missing_label_is_named(self):
        self.assertEqual(
            rules.decide(request({}), SETTINGS), 'Pod "train" lacks the label(s) team'
        )

    def test_empty_settings_are_refused(self):
        with self.assertRaises(rules.SettingsError):
            rules.required_labels('{"requiredLabels": []}')


if __name__ == "__main__":
    unittest.main()
