"""The chart's values.yaml, values.schema.json and documentation stay in step."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "bgjob-operator"
FREE_FORM = {"resources", "resources.requests", "resources.limits",  # any keys allowed
             "grafanaDashboard.labels"}


def leaves(node: Any, path: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node and path not in FREE_FORM:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(leaves(v, f"{path}.{k}".strip(".")))
        return out
    return {path: node}


def schema_leaves(node: dict[str, Any], path: str = "") -> dict[str, dict[str, Any]]:
    props = node.get("properties")
    if props:
        out: dict[str, dict[str, Any]] = {}
        for k, v in props.items():
            out.update(schema_leaves(v, f"{path}.{k}".strip(".")))
        return out
    return {path: node}


def test_values_and_schema_have_the_same_keys_and_types() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.validate(values, schema)
    v, s = leaves(values), schema_leaves(schema)
    assert sorted(v) == sorted(s), "values.yaml and values.schema.json differ in keys"
    kinds = {bool: "boolean", int: "integer", str: "string", list: "array", dict: "object"}
    for key, value in v.items():
        assert s[key]["type"] == kinds[type(value)], key


def test_schema_rejects_what_the_chart_cannot_honour() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    bads: list[dict[str, Any]] = [{"logFormat": "xml"}, {"replicas": 0},
                                  {"metrics": {"port": 70000}}, {"watchNamespaces": "team-a"},
                                  {"unknownKey": 1},
                                  {"metrics": {"serviceMonitor": {"honorLabels": "yes"}}},
                                  {"metrics": {"prometheusRule": {"forByAlert": {
                                      "BackgroundJobTypo": "1m"}}}},
                                  {"metrics": {"prometheusRule": {"forByAlert": {
                                      "BackgroundJobFailing": "soon"}}}},
                                  {"metrics": {"prometheusRule": {
                                      "runbookBaseUrl": "https://x/README.md#alerts"}}}]
    for bad in bads:
        doc = {**values, **bad}
        if "metrics" in bad:
            doc["metrics"] = {**values["metrics"], **bad["metrics"]}
        try:
            jsonschema.validate(doc, schema)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"schema accepted {bad}")


def test_every_value_is_documented() -> None:
    """Each key in values.yaml has a comment right above it (a '# --' line for leaves)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    free = False
    for i, line in enumerate(lines):
        if re.match(r"^\s*(labels|requests|limits):\s*$", line):
            free = True  # the keys inside are examples, documented by their parent
        elif free and re.match(r"^\s{0,2}\S", line):
            free = False
        m = re.match(r"^(\s*)([A-Za-z]\w*):(.*)$", line)
        if not m:
            continue
        leaf = m.group(3).strip() != ""
        if free and len(m.group(1)) > 2:
            continue
        above = lines[i - 1].strip() if i else ""
        inside = i + 1 < len(lines) and lines[i + 1].startswith(m.group(1) + "  ")
        if leaf or not inside:
            assert above.startswith("#"), f"values.yaml line {i + 1}: {line.strip()} has no doc"
