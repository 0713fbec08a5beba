#!/usr/bin/env bash
# Validates every manifest of deploy/kubernetes/ and every worker Deployment that
# `deploy kubernetes` renders (of BINARY, a user binary: CI gives weir-tests' `deployed`, whose
# environments have resources, GPUs and reuse policies) against Kubernetes' schema, strictly
# (an unknown field fails), offline: kubernetes-validate bundles the schemas. Exits non-zero
# when any manifest is invalid. Usage: deploy/kubernetes/validate.sh BINARY
set -euo pipefail
cd "$(dirname "$0")"
binary="$1"
# The version of Kubernetes the manifests are checked against (kubernetes-validate's schemas).
k8s=1.30.0
shopt -s nullglob
static=(*.yaml)
[[ ${#static[@]} -gt 0 ]] || { echo "validate.sh: no manifest in $PWD" >&2; exit 1; }
kubernetes-validate -k "$k8s" --strict --quiet "${static[@]}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# The defaults, and every option that changes what is rendered.
"$binary" deploy kubernetes --image registry.example.com/app:1 --out-dir "$out/plain"
"$binary" deploy kubernetes --image registry.example.com/app:1 --out-dir "$out/all" \
    --server http://weir.ml.svc:8700 --namespace ml --command /usr/local/bin/app \
    --token-secret weir --token-key token --set-env RUST_LOG=info --env-secret model-keys \
    --gpu-node-label nvidia.com/gpu.product
rendered=("$out"/plain/*.yaml "$out"/all/*.yaml)
[[ ${#rendered[@]} -gt 0 ]] || { echo "validate.sh: nothing was rendered" >&2; exit 1; }
kubernetes-validate -k "$k8s" --strict --quiet "${rendered[@]}"
echo "validate.sh: ${#static[@]} static and ${#rendered[@]} rendered manifest files are valid for Kubernetes $k8s"
