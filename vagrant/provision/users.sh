# shellcheck shell=bash
# The users phase of harp-host.sh: etcd's users and authentication, once, on one etcd member
# while a quorum runs. Pure bash + etcdctl, no root: the lab runs it too. Sourced.

users() {
  [ "$1" = etcd ] || die "users is a phase of the etcd role"
  require HARP_NAME HARP_IP HARP_PKI_DIR HARP_CLUSTER
  local p=$HARP_PKI_DIR args=() n
  local roles="$here/../../scripts/etcd-harp-roles"
  [ -x "$roles" ] || die "$roles not found: run harp-host.sh from the repository"
  [ -s "$p/root.pem" ] || die "$p/root.pem missing: scripts/harp-pki $p --client root"
  export ETCDCTL_API=3 ETCDCTL_ENDPOINTS="https://$HARP_IP:2379" ETCDCTL_CACERT="$p/ca.pem" \
    ETCDCTL_CERT="$p/root.pem" ETCDCTL_KEY="$p/root.key"
  unset ETCDCTL_USER
  # root has no password: etcd takes a client certificate's common name as its user, so only
  # the holder of root.key can act as root.
  etcdctl user get root >/dev/null 2>&1 || etcdctl user add root --no-password >/dev/null
  etcdctl user grant-role root root >/dev/null
  for n in $HARP_MANAGERS; do args+=(--manager "$n"); done
  for n in $HARP_AGENTS; do args+=(--agent "$n"); done
  "$roles" "$HARP_CLUSTER" "$p/passwords" "${args[@]}" --admin >/dev/null
  etcdctl auth enable >/dev/null
  echo "harp-host: etcd users of $HARP_CLUSTER made, authentication on"
}
