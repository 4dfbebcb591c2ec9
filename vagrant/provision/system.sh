# shellcheck shell=bash
# The install and start phases of harp-host.sh (VMs only: Debian 12 with systemd). Sourced.

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

# HARP's binaries: prebuilt ones from $HARP_BIN_SRC (the Vagrantfile uploads the host's
# target/release when it exists: same Debian release), else built here from $HARP_SRC with the
# pinned toolchain (without the kernel programs unless `cargo xtask build-ebpf` ran there).
install_harp_binaries() {
  local bin=${HARP_BIN_SRC:-$HARP_SRC/target/release}
  if [ ! -f "$bin/harp-manager" ] || [ ! -f "$bin/harp-agent" ] || [ ! -f "$bin/harpctl" ]; then
    apt_install build-essential curl protobuf-compiler pkg-config
    if ! command -v cargo >/dev/null 2>&1; then
      curl -sSf https://sh.rustup.rs | sh -s -- -y --default-toolchain none
    fi
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
    (cd "$HARP_SRC" && cargo build --release --bins)
    bin=$HARP_SRC/target/release
  fi
  install -m 0755 "$bin/harp-manager" "$bin/harp-agent" "$bin/harpctl" /usr/local/bin/
}

unit() {
  local name=$1 desc=$2 exec=$3 after=$4
  cat >"/etc/systemd/system/$name.service" <<UNIT
[Unit]
Description=$desc
After=network-online.target $after
Wants=network-online.target

[Service]
ExecStart=$exec
Restart=always
RestartSec=1
Environment=RUST_LOG=info

[Install]
WantedBy=multi-user.target
UNIT
}

install() {
  [ "$(id -u)" -eq 0 ] || die "install needs root"
  case $1 in
    etcd)
      apt_install etcd-server etcd-client nftables
      systemctl disable --now etcd >/dev/null 2>&1 || true
      ;;
    postgres)
      apt_install postgresql-15 postgresql-client-15 etcd-client nftables
      install_harp_binaries
      unit harp-manager "HARP manager (leader lease beside Postgres)" \
        "/usr/local/bin/harp-manager -f $HARP_CONF_DIR/config.yml" postgresql.service
      ;;
    ctl)
      apt_install postgresql-client-15 etcd-client
      install_harp_binaries
      ;;
    app)
      apt_install postgresql-client-15 etcd-client nftables curl
      install_harp_binaries
      unit harp-agent "HARP agent (routes clients to the lead master)" \
        "/usr/local/bin/harp-agent -f $HARP_CONF_DIR/config.yml" ""
      ;;
  esac
  systemctl daemon-reload
}

# The files uploaded to $HARP_PKI_SRC (only this host's: the CA, its certificate, its password)
# into $HARP_PKI_DIR, keys readable by the service's user ($1) alone.
install_pki() {
  [ -n "$HARP_PKI_DIR" ] || return 0
  # A second role on the same VM: its files came with the first.
  [ -d "$HARP_PKI_SRC" ] || [ ! -s "$HARP_PKI_DIR/ca.pem" ] || return 0
  [ -d "$HARP_PKI_SRC" ] || die "HARP_PKI_DIR is set but $HARP_PKI_SRC (the uploaded PKI) is missing"
  install -d -m 0755 "$HARP_PKI_DIR"
  install -d -m 0700 -o "$1" "$HARP_PKI_DIR/passwords"
  local f
  for f in "$HARP_PKI_SRC"/*.pem; do install -m 0644 "$f" "$HARP_PKI_DIR/"; done
  for f in "$HARP_PKI_SRC"/*.key; do install -m 0600 -o "$1" "$f" "$HARP_PKI_DIR/"; done
  for f in "$HARP_PKI_SRC"/passwords/*; do
    [ -f "$f" ] && install -m 0600 -o "$1" "$f" "$HARP_PKI_DIR/passwords/"
  done
  rm -rf "$HARP_PKI_SRC"
}

start() {
  [ "$(id -u)" -eq 0 ] || die "start needs root"
  case $1 in
    etcd) install_pki etcd ;;
    *) install_pki root ;;
  esac
  case $1 in
    etcd)
      mkdir -p "$HARP_DATA_DIR/etcd"
      chown -R etcd:etcd "$HARP_DATA_DIR/etcd" 2>/dev/null || true
      install -m 0644 "$HARP_CONF_DIR/etcd.env" /etc/default/etcd
      systemctl enable --now etcd
      ;;
    postgres)
      install -m 0644 "$HARP_CONF_DIR/postgresql.harp.conf" /etc/postgresql/15/main/conf.d/harp.conf
      local hba=/etc/postgresql/15/main/pg_hba.conf
      grep -qxF -f "$HARP_CONF_DIR/pg_hba.harp.conf" "$hba" || cat "$HARP_CONF_DIR/pg_hba.harp.conf" >>"$hba"
      systemctl enable postgresql
      systemctl restart postgresql
      systemctl enable --now harp-manager
      ;;
    app)
      # The cgroup whose processes are steered in the kernel, and bpffs for the pins.
      if [ -n "$HARP_CGROUP_PATH" ]; then mkdir -p "$HARP_CGROUP_PATH"; fi
      mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
      systemctl enable --now harp-agent
      ;;
    ctl) ;;
  esac
}
