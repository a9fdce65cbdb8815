"""Reading the JSON and YAML that users write by hand (specs, counts, cards).

Both formats keep the last of a repeated key without a word; in a hand-written file that is a
typo or an edit left half-done (`counts` twice), so it is refused instead.
"""
from __future__ import annotations

import json

import yaml


class RepeatedKeyError(ValueError):
    pass


def _unique_object(pairs):
    keys = [key for key, _ in pairs]
    repeated = next((key for i, key in enumerate(keys) if key in keys[:i]), None)
    if repeated is not None:
        raise RepeatedKeyError(f"key {repeated!r} is given twice")
    return dict(pairs)


def parse_json(text: str):
    return json.loads(text, object_pairs_hook=_unique_object)


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<' overrides are deliberate
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise RepeatedKeyError(f"key {key!r} is given twice (line "
                                           f"{key_node.start_mark.line + 1})")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str):
    return yaml.load(text, _UniqueKeyLoader)
