#!/usr/bin/env python3
"""Convert CustomResourceDefinitions into the JSON Schema files kubeconform reads.

kubeconform finds a schema by a path template; deploy/k8s/validate.sh uses
`crd-schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json`, so each served version of a CRD becomes
`<kind>-<first label of the group>-<version>.json`, lower case: `kafka-kafka-v1.json` for
`kafka.strimzi.io/v1` `Kafka`, `cluster-postgresql-v1.json` for `postgresql.cnpg.io/v1` `Cluster`.

The `openAPIV3Schema` of each version is rewritten the way the API server reads it:
- strict: an object that lists `properties` gets `additionalProperties: false` (the root too),
  unless it says `x-kubernetes-preserve-unknown-fields: true` or has `additionalProperties`
  already. kubectl's strict field validation rejects unknown fields in the same places; run with
  `-strict`, kubeconform expects schemas that do (its strict mode only switches the path suffix
  for the Kubernetes schemas).
- `x-kubernetes-int-or-string: true` (and the older `format: int-or-string`) accepts an integer
  or a string.
- `nullable: true` accepts null.
- descriptions are dropped (they are most of the bytes and kubeconform never prints them).
A `$comment` at the root names the source. kubeconform compiles these as draft-04, which ignores it.

Usage:
  crd_to_schema.py [--out DIR] [--only KIND[/VERSION] ...] [--source TEXT] FILE|- ...
      Convert CRDs from YAML files (or stdin); `--only` keeps the named kinds/versions.
  crd_to_schema.py --sources deploy/k8s/crd-schemas/sources.tsv [--git-dir-template T] [--out DIR]
      Regenerate every schema listed in sources.tsv (repository, tag, path, kinds). Each file is
      read with `git --git-dir=<T with {owner} and {name}> show <tag>:<path>` when a template is
      given, else downloaded from raw.githubusercontent.com (the only step that needs a network;
      validation never does).
  crd_to_schema.py --self-test
Needs PyYAML (the kubernetes-validate venv of validate.sh has it).
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "crd-schemas"


# ------------------------------------------------------------------------------- schema rewriting
def strict_schema(node):
    """A copy of an OpenAPI v3 schema node rewritten as described in the module docstring."""
    if isinstance(node, list):
        return [strict_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "description" and isinstance(value, str):
            continue
        if key in ("properties", "patternProperties", "definitions") and isinstance(value, dict):
            # Maps of names to schemas: a property may itself be called "description".
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        else:
            out[key] = strict_schema(value)
    if out.get("x-kubernetes-int-or-string") is True or out.get("format") == "int-or-string":
        out.pop("type", None)
        if out.get("format") == "int-or-string":
            del out["format"]
        if "anyOf" not in out and "oneOf" not in out:
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            out["type"] = [*kind, "null"]
    if ("properties" in out and "additionalProperties" not in out
            and out.get("x-kubernetes-preserve-unknown-fields") is not True):
        out["additionalProperties"] = False
    return out


def schema_file_name(kind: str, group: str, version: str) -> str:
    """kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json` for a grouped resource."""
    return f"{kind}-{group.split('.')[0]}-{version}.json".lower()


def convert(documents, only: set[str], source: str) -> dict[str, dict]:
    """File name -> schema for every CRD version in `documents` (selected by `only`, if given)."""
    crds = []
    for doc in documents:
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "List":
            crds.extend(i for i in doc.get("items", []) if i.get("kind") == "CustomResourceDefinition")
        elif doc.get("kind") == "CustomResourceDefinition":
            crds.append(doc)
    out: dict[str, dict] = {}
    for crd in crds:
        spec = crd["spec"]
        kind, group = spec["names"]["kind"], spec["group"]
        for version in spec.get("versions", []):
            name = version["name"]
            if only and kind not in only and f"{kind}/{name}" not in only:
                continue
            if not version.get("served", True):
                continue
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if schema is None:
                raise SystemExit(f"{kind} {name}: no openAPIV3Schema")
            converted = strict_schema(copy.deepcopy(schema))
            comment = f"{group}/{name} {kind} from {source}; generated by deploy/k8s/tools/crd_to_schema.py"
            out[schema_file_name(kind, group, name)] = {"$comment": comment, **converted}
    return out


def write(schemas: dict[str, dict], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, schema in sorted(schemas.items()):
        path = out_dir / name
        path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


# ------------------------------------------------------------------------------- sources
def read_source(repo: str, ref: str, path: str, git_dir_template: str | None) -> str:
    owner, name = repo.split("/", 1)
    if git_dir_template:
        git_dir = git_dir_template.format(owner=owner, name=name)
        return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{ref}:{path}"], check=True,
                              capture_output=True, text=True).stdout
    url = f"https://raw.githubusercontent.com/{repo}/{ref}/{path}"
    with urllib.request.urlopen(url, timeout=60) as answer:
        return answer.read().decode()


def from_sources(table: Path, git_dir_template: str | None) -> dict[str, dict]:
    """sources.tsv: `repository  tag  path  Kind[/version],...` per line; # comments."""
    schemas: dict[str, dict] = {}
    for line in table.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        repo, ref, path, kinds = line.split()
        text = read_source(repo, ref, path, git_dir_template)
        found = convert(yaml.safe_load_all(text), set(kinds.split(",")), f"{repo}@{ref}:{path}")
        wanted = {k.split("/")[0] for k in kinds.split(",")}
        missing = {k for k in wanted if not any(f.startswith(f"{k.lower()}-") for f in found)}
        if missing:
            raise SystemExit(f"{repo}@{ref}:{path}: no CRD for {', '.join(sorted(missing))}")
        schemas.update(found)
    return schemas


# ------------------------------------------------------------------------------- self-test
def self_test() -> None:
    crd = {
        "kind": "CustomResourceDefinition",
        "spec": {"group": "example.io", "names": {"kind": "Widget"}, "versions": [
            {"name": "v1", "served": True, "schema": {"openAPIV3Schema": {
                "type": "object", "description": "drop me",
                "properties": {
                    "spec": {"type": "object", "properties": {
                        "port": {"x-kubernetes-int-or-string": True,
                                 "anyOf": [{"type": "integer"}, {"type": "string"}]},
                        "size": {"format": "int-or-string"},
                        "note": {"type": "string", "nullable": True},
                        "description": {"type": "string"},
                        "free": {"type": "object", "properties": {"a": {"type": "string"}},
                                 "x-kubernetes-preserve-unknown-fields": True},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    }},
                }}}},
            {"name": "v0", "served": False, "schema": {"openAPIV3Schema": {"type": "object"}}},
        ]},
    }
    out = convert([crd], set(), "test")
    assert list(out) == ["widget-example-v1.json"], out
    s = out["widget-example-v1.json"]
    assert s["additionalProperties"] is False and "description" not in s
    spec = s["properties"]["spec"]
    assert spec["additionalProperties"] is False
    assert "type" not in spec["properties"]["port"] and len(spec["properties"]["port"]["anyOf"]) == 2
    assert spec["properties"]["size"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert spec["properties"]["note"]["type"] == ["string", "null"]
    assert spec["properties"]["description"] == {"type": "string"}
    assert "additionalProperties" not in spec["properties"]["free"]
    assert spec["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert convert([crd], {"Gadget"}, "test") == {}
    print("self-test ok")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", help="CRD YAML files, - for stdin")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--only", action="append", default=[], help="Kind or Kind/version to keep")
    ap.add_argument("--source", default="", help="where the CRDs came from, for the $comment")
    ap.add_argument("--sources", type=Path, help="regenerate everything listed in this sources.tsv")
    ap.add_argument("--git-dir-template", help="read sources from local git dirs, e.g. /m/{owner}+{name}/repo")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args(argv)
    if args.self_test:
        self_test()
        return 0
    if args.sources:
        write(from_sources(args.sources, args.git_dir_template), args.out)
        return 0
    if not args.files:
        ap.error("give CRD files, --sources or --self-test")
    schemas: dict[str, dict] = {}
    for f in args.files:
        text = sys.stdin.read() if f == "-" else Path(f).read_text()
        schemas.update(convert(yaml.safe_load_all(text), set(args.only), args.source or f))
    if not schemas:
        raise SystemExit("no CRD versions matched")
    write(schemas, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
