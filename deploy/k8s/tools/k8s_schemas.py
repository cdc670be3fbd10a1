#!/usr/bin/env python3
"""Make the Kubernetes JSON schemas of the PyPI package `kubernetes-validate` readable offline by
kubeconform. Run with the Python of the venv that has the package installed.

The package ships, for each Kubernetes version it knows, `kubernetes-json-schema/v<X.Y.Z>-local`
and `...-local-strict` folders with one file per kind (`deployment-apps-v1.json`, `service-v1.json`:
the names kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}` produces) and a shared
`_definitions.json`. Every file has an `$id` under https://kubernetes.io/api/ and refers to
`/api/_definitions.json#/$defs/...`, which the package's own validator maps in memory. kubeconform
resolves those references against the `$id`, i.e. it would fetch
https://kubernetes.io/api/_definitions.json, which fails without a network (and 404s with one),
so the kind is reported as "could not find schema".

This copies the folders of the requested versions into OUT with the `$id` dropped and the
references made relative (`_definitions.json#/$defs/...`), resolved next to the file.
The copy is made once per package version and Kubernetes version (a `.complete` marker).

Usage: k8s_schemas.py OUT VERSION...      (VERSION like 1.35.0)
       k8s_schemas.py --list             (the versions the package has)
Prints nothing but errors, except with --list.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import kubernetes_validate

SOURCE = Path(kubernetes_validate.__file__).resolve().parent / "kubernetes-json-schema"
ABSOLUTE_REF = '"/api/_definitions.json#'
RELATIVE_REF = '"_definitions.json#'


def versions() -> list[str]:
    found = {p.name[1:].removesuffix("-local") for p in SOURCE.glob("v*-local")}
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def localise(text: str) -> str:
    schema = json.loads(text.replace(ABSOLUTE_REF, RELATIVE_REF))
    if isinstance(schema, dict):
        schema.pop("$id", None)
    return json.dumps(schema)


def prepare(out: Path, version: str) -> None:
    for suffix in ("-local", "-local-strict"):
        src = SOURCE / f"v{version}{suffix}"
        if not src.is_dir():
            raise SystemExit(f"kubernetes-validate has no schemas for Kubernetes {version}; "
                             f"it has {', '.join(versions())}")
        dst = out / src.name
        if (dst / ".complete").exists():
            continue
        tmp = out / f".{src.name}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in src.glob("*.json"):
            (tmp / f.name).write_text(localise(f.read_text()))
        (tmp / ".complete").write_text("")
        shutil.rmtree(dst, ignore_errors=True)
        tmp.rename(dst)


def main(argv: list[str]) -> int:
    if argv == ["--list"]:
        print(" ".join(versions()))
        return 0
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    for version in argv[1:]:
        prepare(out, version.removeprefix("v"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
