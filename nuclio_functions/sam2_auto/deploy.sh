#!/bin/sh
# Deploy pth-sam2-auto. The model and wire-format code lives once, in ../sam2 (model.py,
# protocol.py); this script stages this directory plus those two files in a temporary folder and
# deploys that, so the function image is self-contained.
#
#   nuclio_functions/sam2_auto/deploy.sh [function.yaml|function-gpu.yaml] [extra nuctl args...]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
file=${1:-function.yaml}
[ $# -gt 0 ] && shift
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$here"/main.py "$here"/function.yaml "$here"/function-gpu.yaml "$stage"/
cp "$here"/../sam2/model.py "$here"/../sam2/protocol.py "$stage"/
nuctl deploy --project-name cvat --path "$stage" --file "$stage/$file" --platform local "$@"
