#!/usr/bin/env bash
# Validates the Kubernetes manifests offline: renders both overlays with kustomize and checks
# every resource with kubeconform -strict against
#   - the Kubernetes JSON schemas of the PyPI package kubernetes-validate (made resolvable
#     offline by tools/k8s_schemas.py), for each version in K8S_VERSIONS, and
#   - the operators' CRD schemas kept in crd-schemas/ (tools/crd_to_schema.py, sources.tsv).
# A resource whose kind has no schema is an error, not a skip. Also checks that the dev
# overlay's realm is compose's, and that the prod overlay renders no Secret.
#
# Installs what is missing, into a cache under $HOME (the first run needs the Go module proxy
# and PyPI; later runs need no network, and kubeconform never fetches schemas: the only
# schema locations are local folders, and a proxy that goes nowhere is set while it runs):
#   kubeconform and kustomize with `go install`, kubernetes-validate into a venv.
#
# Exit status: 0 valid, 1 invalid or a tool failed, 77 when Go or python3-venv is missing and
# the tools are not cached yet (the conventional "skipped").
# Usage: deploy/k8s/validate.sh      (K8S_VERSIONS="1.35.0" deploy/k8s/validate.sh to narrow)
set -euo pipefail

KUBECONFORM_VERSION=v0.8.0           # github.com/yannh/kubeconform
KUSTOMIZE_VERSION=v5.8.2             # sigs.k8s.io/kustomize/kustomize/v5 (v5.8.3 needs Go 1.27)
KUBERNETES_VALIDATE_VERSION=1.37.0   # PyPI kubernetes-validate: schemas of Kubernetes 1.25 to 1.37
# The oldest Kubernetes minor still maintained upstream when this was written, and the newest
# the package knows: what validates against both uses no field removed or not yet there.
K8S_VERSIONS="${K8S_VERSIONS:-1.34.0 1.37.0}"
OVERLAYS=(dev prod)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${SHOP_K8S_CACHE:-$HOME/.cache/shop-stack/k8s}"
kubeconform="$cache/kubeconform-$KUBECONFORM_VERSION/kubeconform"
kustomize="$cache/kustomize-$KUSTOMIZE_VERSION/kustomize"
venv="$cache/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION-venv"
k8s_schemas="$cache/schemas/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"

say() { echo "validate: $*"; }
skip() { echo "validate: SKIPPED: $*" >&2; exit 77; }

mkdir -p "$cache"

go_install() { # module@version, binary path
    local module="$1" bin="$2"
    [[ -x "$bin" ]] && return 0
    command -v go >/dev/null 2>&1 || skip "go is not installed (needed once, to build ${module%@*})"
    say "installing $module (go install, into $(dirname "$bin"))"
    # Outside any module, so no go.mod around here has a say.
    (cd "$cache" && GOFLAGS=-mod=mod GOBIN="$(dirname "$bin")" go install "$module")
}
go_install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" "$kubeconform"
go_install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" "$kustomize"

if ! "$venv/bin/python" -c "import kubernetes_validate" >/dev/null 2>&1; then
    python3 -c "import venv, ensurepip" >/dev/null 2>&1 || skip "python3 venv/ensurepip missing (Debian: apt-get install python3-venv)"
    say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (pip, into $venv)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
# shellcheck disable=SC2086 # a list of versions
"$venv/bin/python" "$here/tools/k8s_schemas.py" "$k8s_schemas" $K8S_VERSIONS

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
fail() { echo "validate: FAILED: $*" >&2; failed=1; }

# The converter still does what the committed schemas were made with.
"$venv/bin/python" "$here/tools/crd_to_schema.py" --self-test >/dev/null || fail "crd_to_schema.py --self-test"

# kustomize reads no file outside an overlay, so the dev realm is a copy; it must stay compose's.
cmp -s "$repo/compose/keycloak/shop-realm.json" "$here/overlays/dev/keycloak/shop-realm.json" ||
    fail "overlays/dev/keycloak/shop-realm.json differs from compose/keycloak/shop-realm.json (copy it over)"

# No network for kubeconform: any attempt to fetch goes to a proxy that is not there.
export HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9
export NO_PROXY= no_proxy=

for overlay in "${OVERLAYS[@]}"; do
    rendered="$work/$overlay.yaml"
    if ! "$kustomize" build "$here/overlays/$overlay" >"$rendered"; then
        fail "kustomize build overlays/$overlay"
        continue
    fi
    if [[ "$overlay" == prod ]] && grep -qE '^kind: Secret$' "$rendered"; then
        fail "overlays/prod renders a Secret: prod Secrets are created beforehand, never committed"
    fi
    for version in $K8S_VERSIONS; do
        say "overlays/$overlay against Kubernetes $version + crd-schemas/"
        if ! "$kubeconform" -strict -summary -output text \
            -kubernetes-version "$version" \
            -schema-location "$k8s_schemas/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
            -schema-location "$here/crd-schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
            "$rendered"; then
            fail "overlays/$overlay against Kubernetes $version"
        fi
    done
done

if ((failed)); then
    say "INVALID"
    exit 1
fi
say "OK: overlays ${OVERLAYS[*]} valid against Kubernetes ${K8S_VERSIONS// /, } and the operators' CRDs"
