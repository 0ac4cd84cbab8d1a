#!/bin/sh
# Deploy pth-sam2 (interactor + batch protocol).
#
#   nuclio_functions/sam2/deploy.sh [function.yaml|function-gpu.yaml] [extra nuctl args...]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
file=${1:-function.yaml}
[ $# -gt 0 ] && shift
nuctl deploy --project-name cvat --path "$here" --file "$here/$file" --platform local "$@"
