# Sourced (not executed) by CVAT's backend_entrypoint.sh from /etc/cvat/init.d/ before
# supervisord starts Smokescreen. Resolves the bridge's in-network alias and appends its IP to
# SMOKESCREEN_OPTS, because Smokescreen's --allow-address accepts IP addresses only.
# Mounted into cvat_server (ping) and cvat_worker_webhooks (deliveries) by
# bridge/docker-compose.bridge.yml. Never fails the CVAT start: if the alias does not resolve,
# it prints why and CVAT starts with the static allowance only.
#   BRIDGE_ALIAS       alias to resolve            (default cvat-bridge.internal)
#   BRIDGE_ALIAS_WAIT  seconds to wait for it      (default 30)

_bridge_alias="${BRIDGE_ALIAS:-cvat-bridge.internal}"
_bridge_wait="${BRIDGE_ALIAS_WAIT:-30}"
_bridge_ip=""
_bridge_i=0
while [ "$_bridge_i" -le "$_bridge_wait" ]; do
    _bridge_ip="$(getent hosts "$_bridge_alias" 2>/dev/null | awk 'NR == 1 { print $1 }' || true)"
    if [ -n "$_bridge_ip" ]; then
        break
    fi
    _bridge_i=$((_bridge_i + 1))
    sleep 1
done
case "$_bridge_ip" in
    "")
        echo "allow-bridge.sh: '$_bridge_alias' did not resolve within ${_bridge_wait}s;" \
             "webhooks to it will be denied by Smokescreen (407)." \
             "Start the bridge first, or use http://bridge.gateway:8000." >&2
        ;;
    *[!0-9a-fA-F.:]*)
        echo "allow-bridge.sh: '$_bridge_alias' resolved to '$_bridge_ip', not an IP; ignored" >&2
        ;;
    *)
        export SMOKESCREEN_OPTS="${SMOKESCREEN_OPTS:-} --allow-address=$_bridge_ip"
        echo "allow-bridge.sh: Smokescreen allows $_bridge_alias ($_bridge_ip): SMOKESCREEN_OPTS=$SMOKESCREEN_OPTS"
        ;;
esac
unset _bridge_alias _bridge_wait _bridge_ip _bridge_i
