# shellcheck shell=bash
# The configure phase of harp-host.sh: renders config files from HARP_* variables. Sourced.

require() {
  local v
  for v in "$@"; do [ -n "${!v:-}" ] || die "$v is required"; done
}

# https when HARP_PKI_DIR is set (etcd's client and peer links alike), else http.
etcd_scheme() { if [ -n "$HARP_PKI_DIR" ]; then echo https; else echo http; fi; }

# "e1=198.18.0.10,e2=..." -> "e1=https://198.18.0.10:2380,..."
etcd_initial_cluster() {
  local out="" m s
  s=$(etcd_scheme)
  IFS=, read -ra members <<<"$HARP_ETCD_MEMBERS"
  for m in "${members[@]}"; do out+="${out:+,}${m%%=*}=$s://${m#*=}:2380"; done
  echo "$out"
}

# The etcd user of a unit, as scripts/etcd-harp-roles names it: $1 manager | agent | admin.
etcd_user() {
  case $1 in
    admin) echo "harp-$HARP_CLUSTER-admin" ;;
    *) echo "harp-$HARP_CLUSTER-$1-$HARP_NAME" ;;
  esac
}

# "e1=198.18.0.10,e2=..." -> "\"198.18.0.10:2379\", ..."
etcd_endpoints_yaml() {
  local out="" m
  IFS=, read -ra members <<<"$HARP_ETCD_MEMBERS"
  for m in "${members[@]}"; do out+="${out:+, }\"${m#*=}:2379\""; done
  echo "$out"
}

# etcd reads ETCD_* variables (the Debian unit from /etc/default/etcd).
# With HARP_PKI_DIR: TLS only, a client certificate required on client and peer links.
render_etcd() {
  local s
  s=$(etcd_scheme)
  cat >"$HARP_CONF_DIR/etcd.env" <<CONF
ETCD_NAME=$HARP_NAME
ETCD_DATA_DIR=$HARP_DATA_DIR/etcd
ETCD_LISTEN_CLIENT_URLS=$s://$HARP_IP:2379,$s://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=$s://$HARP_IP:2379
ETCD_LISTEN_PEER_URLS=$s://$HARP_IP:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=$s://$HARP_IP:2380
ETCD_INITIAL_CLUSTER=$(etcd_initial_cluster)
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN=$HARP_ETCD_TOKEN
ETCD_HEARTBEAT_INTERVAL=$HARP_ETCD_HEARTBEAT_MS
ETCD_ELECTION_TIMEOUT=$HARP_ETCD_ELECTION_MS
CONF
  [ -n "$HARP_PKI_DIR" ] || return 0
  local p=$HARP_PKI_DIR
  cat >>"$HARP_CONF_DIR/etcd.env" <<CONF
ETCD_CERT_FILE=$p/server.pem
ETCD_KEY_FILE=$p/server.key
ETCD_TRUSTED_CA_FILE=$p/ca.pem
ETCD_CLIENT_CERT_AUTH=true
ETCD_PEER_CERT_FILE=$p/server.pem
ETCD_PEER_KEY_FILE=$p/server.key
ETCD_PEER_TRUSTED_CA_FILE=$p/ca.pem
ETCD_PEER_CLIENT_CERT_AUTH=true
CONF
}

# Postgres settings (Debian includes conf.d/*.conf) and the client rule for the private net;
# with HARP_REPLICATION=streaming also what physical replication and pg_rewind need, and the
# rule letting the other nodes stream (and take base backups) from this one.
render_postgres() {
  cat >"$HARP_CONF_DIR/postgresql.harp.conf" <<CONF
listen_addresses = '$HARP_IP,127.0.0.1'
port = $HARP_PG_PORT
# The workload reads current_setting('cluster_name') to learn which node took a write.
cluster_name = '$HARP_NAME'
# Sessions HARP cuts at a failover stop at once on the old leader too.
client_connection_check_interval = '1s'
CONF
  local net="${HARP_IP%.*}.0/24"
  cat >"$HARP_CONF_DIR/pg_hba.harp.conf" <<CONF
host all all $net trust
CONF
  [ "$HARP_REPLICATION" = streaming ] || return 0
  # The settings of tests/src/cluster/streaming.rs (SETTINGS). Never primary_conninfo or
  # synchronous_standby_names here: the manager sets those at run time.
  cat >>"$HARP_CONF_DIR/postgresql.harp.conf" <<CONF
# Streaming replication (cluster_name is each standby's application_name).
wal_level = replica
wal_log_hints = on
hot_standby = on
wal_keep_size = '1GB'
max_wal_senders = 10
max_replication_slots = 10
wal_retrieve_retry_interval = '500ms'
CONF
  cat >>"$HARP_CONF_DIR/pg_hba.harp.conf" <<CONF
host replication all $net trust
CONF
}

# The cluster section: multi-writer (the default) renders the name alone.
cluster_yaml() {
  echo "cluster:"
  echo "  name: $HARP_CLUSTER"
  [ "$HARP_REPLICATION" = streaming ] || return 0
  echo "  replication: streaming"
  echo "  synchronous_mode: $HARP_SYNCHRONOUS_MODE"
}

# The dcs section; with HARP_PKI_DIR, TLS as etcd user $1 (its certificate and password file).
dcs_yaml() {
  echo "dcs:"
  echo "  driver: etcd"
  echo "  endpoints: [$(etcd_endpoints_yaml)]"
  echo "  request_timeout: 1000ms"
  [ -n "$HARP_PKI_DIR" ] || return 0
  local p=$HARP_PKI_DIR
  echo "  ssl: on"
  echo "  ssl_ca_file: $p/ca.pem"
  echo "  ssl_cert_file: $p/$1.pem"
  echo "  ssl_key_file: $p/$1.key"
  echo "  user: $1"
  echo "  password_file: $p/passwords/$1"
}

# A HARP unit's config.yml: the cluster and etcd it belongs to (as etcd user $2), its own
# section ($1), its HTTP API.
render_unit() {
  cat >"$HARP_CONF_DIR/config.yml" <<CONF
$(cluster_yaml)
$(dcs_yaml "$2")
location: $HARP_LOCATION
$1
http:
  enable: true
  host: $HARP_IP
  port: $HARP_HTTP_PORT
CONF
}

render_manager() {
  render_unit "manager:
  name: $HARP_NAME
  dsn: \"host=$HARP_IP port=$HARP_PG_PORT user=postgres dbname=postgres connect_timeout=2\"
  priority: $HARP_PRIORITY
  leader_lease_duration: $HARP_LEASE_SECS
  lease_refresh_interval: $HARP_REFRESH_MS
  db_data_dir: $HARP_PG_DATA
  db_bin_dir: $HARP_PG_BIN" "$(etcd_user manager)"
}

render_agent() {
  local cgroup=""
  [ -z "$HARP_CGROUP_PATH" ] || cgroup="  cgroup_path: $HARP_CGROUP_PATH"
  [ "$HARP_PROXY_MODE" != ebpf ] || [ -n "$cgroup" ] || die "HARP_PROXY_MODE=ebpf needs HARP_CGROUP_PATH"
  render_unit "proxy:
  name: $HARP_NAME
  listen_address: $HARP_IP
  listen_port: $HARP_LISTEN_PORT
  pause_timeout: ${HARP_PAUSE_TIMEOUT_MS}ms
  leader_lease_duration: $HARP_LEASE_SECS
  lease_refresh_interval: $HARP_REFRESH_MS
  mode: $HARP_PROXY_MODE
$cgroup" "$(etcd_user agent)"
}

# harpctl's config for an operator's console: the cluster's admin user.
render_harpctl() {
  cat >"$HARP_CONF_DIR/harpctl.yml" <<CONF
$(cluster_yaml)
$(dcs_yaml "$(etcd_user admin)")
location: $HARP_LOCATION
CONF
}

configure() {
  require HARP_NAME HARP_IP HARP_ETCD_MEMBERS
  case $HARP_REPLICATION in
    multi_writer|streaming) ;;
    *) die "HARP_REPLICATION=$HARP_REPLICATION: expected multi_writer or streaming" ;;
  esac
  case $HARP_SYNCHRONOUS_MODE in
    off|on|strict) ;;
    *) die "HARP_SYNCHRONOUS_MODE=$HARP_SYNCHRONOUS_MODE: expected off, on or strict" ;;
  esac
  mkdir -p "$HARP_CONF_DIR"
  case $1 in
    etcd) render_etcd ;;
    postgres) render_postgres; render_manager ;;
    app) render_agent ;;
    ctl) render_harpctl ;;
  esac
  echo "harp-host: $1 $HARP_NAME configured in $HARP_CONF_DIR"
}
