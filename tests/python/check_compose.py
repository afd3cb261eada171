"""Checks Compose files against the Compose Specification's JSON schema (the copy that
check-jsonschema ships), the way Compose reads them: once variables are substituted, a field
the schema types as "boolean or string" must be a boolean, since the string is only there to
allow `${VAR}` (Compose refuses `restart: unless-stopped` under `depends_on`, which the schema
alone would let through). Exits non-zero naming every problem."""

import json
import sys
from importlib import resources

import jsonschema
import yaml


def strict(node):
    if isinstance(node, dict):
        if node.get("type") == ["boolean", "string"]:
            node["type"] = "boolean"
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)
    return node


def main(paths):
    schema_file = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    schema = strict(json.loads(schema_file.read_text()))
    validator = jsonschema.Draft202012Validator(schema)
    problems = 0
    for path in paths:
        with open(path) as f:
            document = yaml.safe_load(f)
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.path)):
            where = "/".join(str(p) for p in error.absolute_path) or "(top)"
            print(f"{path}: {where}: {error.message}")
            problems += 1
        if problems == 0:
            print(f"{path}: valid Compose")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
