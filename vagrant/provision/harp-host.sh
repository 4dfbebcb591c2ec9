#!/usr/bin/env bash
# Sets up ONE host of a HARP deployment.
#
#   harp-host.sh <role> <phase>...      role: etcd | postgres | app | ctl
#                                       phase: configure | install | start | users
#
# configure  renders the host's config files into $HARP_CONF_DIR from the environment below.
#            Pure bash, no root, no packages: the network-namespace lab (tests/src/lab/hosts)
#            runs this phase to make the configs it starts its processes with, so what the VMs
#            run is what the lab tests.
# install    (VMs) Debian packages, HARP binaries, systemd units.
# start      (VMs) installs the rendered configs where the services read them and starts them.
# users      (etcd role, once, on one member once a quorum runs; needs HARP_PKI_DIR) etcd's
#            root user (it logs in by its client certificate only), HARP's least-privilege users
#            (scripts/etcd-harp-roles; passwords in $HARP_PKI_DIR/passwords), then etcd's auth.
#            The lab runs this phase too.
# Role ctl is an operator's console: harpctl.yml as the cluster's etcd admin user.
#
# Environment (defaults in brackets):
#   HARP_NAME            etcd member / node / proxy name (required)
#   HARP_IP              this host's address (required)
#   HARP_ETCD_MEMBERS    etcd members as name=ip,name=ip,... (required)
#   HARP_CONF_DIR        [/etc/harp]           where configure writes
#   HARP_DATA_DIR        [/var/lib/harp]       etcd data lives in $HARP_DATA_DIR/etcd
#   HARP_CLUSTER         [demo]                HARP cluster name
#   HARP_LOCATION        [dca]                 postgres and app roles
#   HARP_ETCD_TOKEN      [harp-$HARP_CLUSTER]  etcd initial-cluster token
#   HARP_ETCD_HEARTBEAT_MS [100]  HARP_ETCD_ELECTION_MS [1000]
#   HARP_LEASE_SECS      [6]      HARP_REFRESH_MS [2000]   leader lease and keep-alive
#   HARP_PRIORITY        [100]                 postgres role
#   HARP_PG_PORT         [5432]
#   HARP_PG_DATA         [/var/lib/postgresql/15/main]
#   HARP_PG_BIN          [/usr/lib/postgresql/15/bin]
#                        (manager.db_data_dir and manager.db_bin_dir)
#   HARP_REPLICATION     [multi_writer]        cluster.replication: multi_writer | streaming
#                        (streaming: replication settings and pg_hba rule for the postgres role)
#   HARP_SYNCHRONOUS_MODE [on]                 cluster.synchronous_mode with streaming:
#                        off | on | strict
#   HARP_HTTP_PORT       [8080 manager, 8081 agent]
#   HARP_LISTEN_PORT     [6432]                app role: where clients connect
#   HARP_PROXY_MODE      [auto]                app role: auto | ebpf | userspace
#   HARP_CGROUP_PATH     []                    app role: cgroup steered in the kernel
#   HARP_PAUSE_TIMEOUT_MS [10000]              app role
#   HARP_PKI_DIR         []                    set: etcd over TLS only (client and peer links),
#                        client certificates required, etcd users on. The directory
#                        scripts/harp-pki makes: ca.pem, server.pem/.key (etcd members),
#                        <user>.pem/.key per etcd user (root, harp-<cluster>-manager-<node>,
#                        harp-<cluster>-agent-<proxy>, harp-<cluster>-admin), passwords/<user>.
#                        Empty: plaintext etcd with no users (not for production)
#   HARP_PKI_SRC         [/tmp/harp-pki]       start (VMs): where the host's files were uploaded
#   HARP_MANAGERS, HARP_AGENTS []              users phase: node and proxy names, space-separated
#   HARP_SRC             [/harp]               install: the repository (Vagrant synced folder)
set -euo pipefail

die() { echo "harp-host: $*" >&2; exit 1; }
usage() { sed -n '2,4p' "$0" >&2; exit 2; }

[ $# -ge 2 ] || usage
role=$1; shift
case $role in etcd|postgres|app|ctl) ;; *) usage ;; esac

here=$(cd "$(dirname "$0")" && pwd)

: "${HARP_CONF_DIR:=/etc/harp}"
: "${HARP_DATA_DIR:=/var/lib/harp}"
: "${HARP_CLUSTER:=demo}"
: "${HARP_LOCATION:=dca}"
: "${HARP_ETCD_TOKEN:=harp-$HARP_CLUSTER}"
: "${HARP_ETCD_HEARTBEAT_MS:=100}"
: "${HARP_ETCD_ELECTION_MS:=1000}"
: "${HARP_LEASE_SECS:=6}"
: "${HARP_REFRESH_MS:=2000}"
: "${HARP_PRIORITY:=100}"
: "${HARP_PG_PORT:=5432}"
: "${HARP_PG_DATA:=/var/lib/postgresql/15/main}"
: "${HARP_PG_BIN:=/usr/lib/postgresql/15/bin}"
: "${HARP_REPLICATION:=multi_writer}"
: "${HARP_SYNCHRONOUS_MODE:=on}"
: "${HARP_LISTEN_PORT:=6432}"
: "${HARP_PROXY_MODE:=auto}"
: "${HARP_CGROUP_PATH:=}"
: "${HARP_PAUSE_TIMEOUT_MS:=10000}"
: "${HARP_SRC:=/harp}"
: "${HARP_PKI_DIR:=}"
: "${HARP_PKI_SRC:=/tmp/harp-pki}"
: "${HARP_MANAGERS:=}"
: "${HARP_AGENTS:=}"
if [ -z "${HARP_HTTP_PORT:-}" ]; then
  if [ "$role" = app ]; then HARP_HTTP_PORT=8081; else HARP_HTTP_PORT=8080; fi
fi

# shellcheck source=render.sh
. "$here/render.sh"
# shellcheck source=system.sh
. "$here/system.sh"
# shellcheck source=users.sh
. "$here/users.sh"

for phase in "$@"; do
  case $phase in
    configure) configure "$role" ;;
    install) install "$role" ;;
    start) start "$role" ;;
    users) users "$role" ;;
    *) usage ;;
  esac
done
