#!/usr/bin/env bash
# Deploy this repo's Nuclio functions to a local (Docker) Nuclio on CVAT's network, or to Nuclio's
# Kubernetes platform.
#
# Usage: deploy.sh [--gpu] [--platform local|kube] [--registry R [--run-registry R]] [--dry-run] [FUNCTION...]
#   FUNCTION   a directory next to this script (gridcorners, gridpose, coralseg, lama, sam2, ...);
#              default: every directory holding a function.yaml
#   --gpu      deploy function-gpu.yaml instead of function.yaml
#   --platform local (default: Docker, joins NUCLIO_NETWORK) or kube (function-kube[-gpu].yaml is
#              merged onto the config: no docker network, replicas, resources, node placement;
#              see docs/kubernetes.md); kube needs --registry (or NUCTL_REGISTRY)
#   --dry-run  print the nuctl commands instead of running them
#
# Functions whose function.yaml has a CVAT type annotation (detector, interactor, reid, tracker) go
# to NUCLIO_PROJECT, the project CVAT lists; the others (lama: the bridge calls it, CVAT cannot) go
# to NUCLIO_BRIDGE_PROJECT, which CVAT does not list: CVAT 2.73 refuses a function of no or unknown
# type with "InvalidFunctionMetadataError ... unknown type: None" on every listing. The bridge calls
# functions by container name (nuclio-<namespace>-<name>), which does not depend on the project.
# A directory with a shared-modules.txt (paths relative to it, one a line) is deployed from a staged
# copy holding those files too (sam2_auto, sam2_tracker share ../sam2/model.py, ...).
#
# Environment:
#   NUCTL                      nuctl binary (default: nuctl)
#   NUCTL_REGISTRY             image registry for --platform kube (or --registry)
#   NUCLIO_NAMESPACE           Kubernetes namespace for --platform kube (default: nuclio)
#   NUCLIO_PROJECT             Nuclio project (default: cvat; CVAT lists the functions of this project)
#   NUCLIO_BRIDGE_PROJECT      project of the functions CVAT must not list (default: cvat-bridge)
#   NUCLIO_NETWORK             Docker network the functions join (default: cvat_cvat)
#   CVAT_FUNCTIONS_REDIS_HOST  passed to every function, as CVAT's serverless/deploy_*.sh do
#                              (default: cvat_redis_ondisk)
#   CVAT_FUNCTIONS_REDIS_PORT  (default: 6666)
#   WEIGHTS_URL_<NAME>         build-time weights URL for function directory <NAME> (upper case,
#                              e.g. WEIGHTS_URL_GRIDCORNERS); overrides the WEIGHTS_URL build ARG
#                              of its function.yaml
#   WEIGHTS_URL                the same, when exactly one FUNCTION is named
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NUCTL="${NUCTL:-nuctl}"
PROJECT="${NUCLIO_PROJECT:-cvat}"
BRIDGE_PROJECT="${NUCLIO_BRIDGE_PROJECT:-cvat-bridge}"
NETWORK="${NUCLIO_NETWORK:-cvat_cvat}"
REDIS_HOST="${CVAT_FUNCTIONS_REDIS_HOST:-cvat_redis_ondisk}"
REDIS_PORT="${CVAT_FUNCTIONS_REDIS_PORT:-6666}"
NAMESPACE="${NUCLIO_NAMESPACE:-nuclio}"
REGISTRY="${NUCTL_REGISTRY:-}"
RUN_REGISTRY=""
PLATFORM="local"

usage() {
    sed -n '2,37p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die() {
    echo "deploy.sh: $*" >&2
    exit 2
}

run() {
    if [[ "$DRY_RUN" == 1 ]]; then
        printf '%q ' "$@"
        printf '\n'
    else
        "$@"
    fi
}

GPU=0
DRY_RUN=0
FUNCTIONS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpu) GPU=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --platform) PLATFORM="${2:-}"; shift ;;
        --registry) REGISTRY="${2:-}"; shift ;;
        --run-registry) RUN_REGISTRY="${2:-}"; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) FUNCTIONS+=("${1%/}") ;;
    esac
    shift
done

CONFIG_NAME="function.yaml"
[[ "$GPU" == 1 ]] && CONFIG_NAME="function-gpu.yaml"
KUBE_OVERLAY="function-kube.yaml"
[[ "$GPU" == 1 ]] && KUBE_OVERLAY="function-kube-gpu.yaml"
case "$PLATFORM" in
    local) ;;
    kube) [[ -n "$REGISTRY" ]] || die "--platform kube needs --registry (or NUCTL_REGISTRY): where nuctl pushes images" ;;
    *) die "--platform must be local or kube, not '$PLATFORM'" ;;
esac
PLATFORM_ARGS=(--platform "$PLATFORM")
[[ "$PLATFORM" == kube ]] && PLATFORM_ARGS+=(--namespace "$NAMESPACE")

if [[ ${#FUNCTIONS[@]} -eq 0 ]]; then
    for dir in "$SCRIPT_DIR"/*/; do
        [[ -f "$dir/function.yaml" ]] && FUNCTIONS+=("$(basename "$dir")")
    done
    [[ ${#FUNCTIONS[@]} -gt 0 ]] || die "no function directories found in $SCRIPT_DIR"
fi

for fn in "${FUNCTIONS[@]}"; do
    [[ -f "$SCRIPT_DIR/$fn/$CONFIG_NAME" ]] || die "no $CONFIG_NAME for function '$fn' in $SCRIPT_DIR"
    if [[ "$PLATFORM" == kube && ! -f "$SCRIPT_DIR/$fn/$KUBE_OVERLAY" ]]; then
        die "no $KUBE_OVERLAY for function '$fn' in $SCRIPT_DIR"
    fi
done
if [[ -n "${WEIGHTS_URL:-}" && ${#FUNCTIONS[@]} -ne 1 ]]; then
    die "WEIGHTS_URL applies to one function; name it, or use WEIGHTS_URL_<NAME>"
fi

# The project a function belongs in: CVAT's when its config declares a type CVAT knows.
project_of() {
    if grep -Eq '^[[:space:]]+type:[[:space:]]*(detector|interactor|reid|tracker)[[:space:]]*(#.*)?$' "$1"; then
        echo "$PROJECT"
    else
        echo "$BRIDGE_PROJECT"
    fi
}

CREATED=()
ensure_project() {
    local p
    for p in "${CREATED[@]+"${CREATED[@]}"}"; do
        [[ "$p" == "$1" ]] && return 0
    done
    CREATED+=("$1")
    if [[ "$DRY_RUN" == 1 ]] || ! "$NUCTL" get project "$1" "${PLATFORM_ARGS[@]}" >/dev/null 2>&1; then
        run "$NUCTL" create project "$1" "${PLATFORM_ARGS[@]}"
    fi
}

TMP_DIR="$(mktemp -d)"
trap 'rm -rf "$TMP_DIR"' EXIT

for fn in "${FUNCTIONS[@]}"; do
    root="$SCRIPT_DIR/$fn"
    config="$root/$CONFIG_NAME"
    project="$(project_of "$config")"
    ensure_project "$project"
    if [[ -f "$root/shared-modules.txt" ]]; then
        stage="$TMP_DIR/stage-$fn"
        mkdir -p "$stage"
        cp -R "$root"/. "$stage"/
        while IFS= read -r shared || [[ -n "$shared" ]]; do
            [[ -z "$shared" || "$shared" == \#* ]] && continue
            [[ -f "$root/$shared" ]] || die "$fn/shared-modules.txt names $shared, which does not exist"
            cp "$root/$shared" "$stage"/
        done < "$root/shared-modules.txt"
        root="$stage"
        config="$stage/$CONFIG_NAME"
    fi
    var="WEIGHTS_URL_$(echo "$fn" | tr '[:lower:]-' '[:upper:]_')"
    url="${!var:-${WEIGHTS_URL:-}}"
    if [[ -n "$url" ]]; then
        # the build ARG holding the URL: WEIGHTS_URL (sam2 and sam2_auto call it SAM2_CHECKPOINT_URL)
        arg="$(grep -oE 'value: (WEIGHTS_URL|SAM2_CHECKPOINT_URL)=' "$config" | head -n 1 | sed 's/^value: //; s/=$//')"
        [[ -n "$arg" ]] || die "$config has no WEIGHTS_URL build argument"
        escaped="$(printf '%s' "$url" | sed 's/[\\|&]/\\&/g')"
        sed "s|value: ${arg}=.*|value: ${arg}=${escaped}|" "$config" > "$TMP_DIR/$fn-$CONFIG_NAME"
        config="$TMP_DIR/$fn-$CONFIG_NAME"
    fi
    if [[ "$PLATFORM" == kube ]]; then
        # the overlay comes from the function's own folder (config may be a staged or patched copy)
        merged="$TMP_DIR/$fn-kube.yaml"
        if [[ "$DRY_RUN" == 1 ]]; then
            printf 'python3 %q %q %q > %q\n' "$SCRIPT_DIR/../deploy/nuclio/kube_config.py" "$config" \
                "$SCRIPT_DIR/$fn/$KUBE_OVERLAY" "$merged"
        fi
        python3 "$SCRIPT_DIR/../deploy/nuclio/kube_config.py" "$config" "$SCRIPT_DIR/$fn/$KUBE_OVERLAY" > "$merged"
        echo "Deploying $fn ($CONFIG_NAME + $KUBE_OVERLAY) into Nuclio project $project, namespace $NAMESPACE..." >&2
        registry_args=(--registry "$REGISTRY")
        [[ -n "$RUN_REGISTRY" ]] && registry_args+=(--run-registry "$RUN_REGISTRY")
        run "$NUCTL" deploy --project-name "$project" --path "$root" --file "$merged" "${PLATFORM_ARGS[@]}" \
            "${registry_args[@]}" \
            --env "CVAT_FUNCTIONS_REDIS_HOST=$REDIS_HOST" \
            --env "CVAT_FUNCTIONS_REDIS_PORT=$REDIS_PORT"
        continue
    fi
    echo "Deploying $fn ($CONFIG_NAME) into Nuclio project $project..." >&2
    run "$NUCTL" deploy --project-name "$project" --path "$root" --file "$config" --platform local \
        --env "CVAT_FUNCTIONS_REDIS_HOST=$REDIS_HOST" \
        --env "CVAT_FUNCTIONS_REDIS_PORT=$REDIS_PORT" \
        --platform-config "{\"attributes\": {\"network\": \"$NETWORK\"}}"
done

run "$NUCTL" get function "${PLATFORM_ARGS[@]}"
