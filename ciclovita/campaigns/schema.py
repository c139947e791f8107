"""JSON Schemas for editors: campaign files and segments.yaml.

Built from the pydantic models and the condition language's field registry, so the schema
and the validator never disagree. ``ciclovita schema`` prints them; the repository keeps a
copy in ``schemas/`` (a test checks it is current).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ciclovita.campaigns.spec import Campaign, Policy
from ciclovita.segments.conditions import condition_json_schema

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
CONDITION_REF = {"$ref": "#/$defs/condition"}


def campaign_schema() -> dict[str, Any]:
    schema = Campaign.model_json_schema(by_alias=True)
    audience = schema["$defs"]["Audience"]["properties"]
    for key in ("where", "exclude"):
        audience[key] = {
            "anyOf": [CONDITION_REF, {"type": "null"}],
            "description": audience[key].get("description", key),
        }
    schema["$defs"]["condition"] = condition_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ciclovita campaign"
    return schema


def segments_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ciclovita segments",
        "type": "object",
        "properties": {
            "segments": {
                "type": "object",
                "propertyNames": {"pattern": "^[a-z][a-z0-9_]{0,62}$"},
                "additionalProperties": {
                    "type": "object",
                    "properties": {"description": {"type": "string"}, "where": CONDITION_REF},
                    "required": ["where"],
                    "additionalProperties": False,
                },
            }
        },
        "additionalProperties": False,
        "$defs": {"condition": condition_json_schema()},
    }


def policy_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema(by_alias=True)
    schema["title"] = "ciclovita delivery policy"
    return schema


SCHEMAS = {"campaign": campaign_schema, "segments": segments_schema, "policy": policy_schema}


def render(name: str) -> str:
    return json.dumps(SCHEMAS[name](), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
