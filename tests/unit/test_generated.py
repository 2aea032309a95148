"""Generated files stay in step with their sources."""

from __future__ import annotations

from pathlib import Path

import yaml

from bgjob import crd

ROOT = Path(__file__).resolve().parents[2]


def test_crd_file_is_generated_from_the_models() -> None:
    for folder in (ROOT / "crds", ROOT / crd.CHART_COPY):
        text = (folder / crd.CRD_FILE).read_text()
        assert text == crd.render_text(), f"{folder} is stale: run python -m bgjob.crd"


def test_crd_schema_is_structural() -> None:
    doc = yaml.safe_load(crd.render_text())

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for bad in ("$ref", "anyOf", "title", "$defs"):
                assert bad not in node, f"{path}: {bad}"
            assert node.get("additionalProperties") is not False, path
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(doc, "crd")


def test_every_spec_field_has_a_description_starting_with_its_name() -> None:
    schema = crd.render()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]

    def walk(props: dict[str, dict[str, object]], path: str) -> None:
        for name, node in props.items():
            desc = str(node.get("description", ""))
            assert desc, f"{path}.{name} has no description"
            sub = node.get("properties")
            if isinstance(sub, dict):
                walk(sub, f"{path}.{name}")

    walk(schema["spec"]["properties"], "spec")
    retry = schema["spec"]["properties"]["retry"]["properties"]
    for name, node in retry.items():
        assert str(node["description"]).startswith(name), name
