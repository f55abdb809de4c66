#!/usr/bin/env bash
# Makes sure the base images that deploy/Dockerfile and docker-compose.yml
# start from exist in the local Docker engine. An image already present is
# left alone; an absent one is pulled; only where the pull fails (a machine
# with no registry) is an equivalent built here under the same name, so the
# Dockerfiles build unchanged:
#   debian:bookworm-slim     debootstrap (minbase) from Debian's archive, docker import
#   rust:X.Y-slim-bookworm   that base plus this machine's Rust toolchain (same X.Y) and gcc
#   prom/prometheus:vX.Y.Z   that base plus Debian's prometheus package (same version)
# grafana/grafana has no Debian package and cannot be made here: the script
# says so and goes on (scripts/e2e-compose.sh runs the stack without it).
# Needs root (debootstrap) and network access to Debian's archive.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "docker-base-images: $*" >&2; }

arg_default() { sed -n "s/^ARG $1=//p" "$root/deploy/Dockerfile" | head -1; }
DEBIAN_IMAGE=${DEBIAN_IMAGE:-$(arg_default DEBIAN_IMAGE)}
RUST_IMAGE=${RUST_IMAGE:-$(arg_default RUST_IMAGE)}
PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-$(sed -n 's/^ *image: *\${PROMETHEUS_IMAGE:-\(.*\)}.*/\1/p' "$root/docker-compose.yml" | head -1)}
GRAFANA_IMAGE=${GRAFANA_IMAGE:-$(sed -n 's/^ *image: *\${GRAFANA_IMAGE:-\(.*\)}.*/\1/p' "$root/docker-compose.yml" | head -1)}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

present() { docker image inspect "$1" >/dev/null 2>&1; }
# Pulling from an unreachable registry can hang on DNS or TCP; bound it.
pullable() { timeout "${PULL_TIMEOUT:-60}" docker pull -q "$1" >/dev/null 2>&1; }
need() {
  if present "$1"; then say "$1: present"; return 1; fi
  if pullable "$1"; then say "$1: pulled"; return 1; fi
  say "$1: absent and cannot be pulled: building an equivalent here"
}

work=$(mktemp -d)
cleanup() {
  docker rm -f apex-base-build >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

build_debian() {
  local suite=${DEBIAN_IMAGE#*:}; suite=${suite%%-*}
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
  local rootfs=$work/rootfs
  debootstrap --variant=minbase "$suite" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; say "debootstrap failed"; exit 1; }
  # What the official slim image trims and configures for containers.
  cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $MIRROR $suite main
deb $MIRROR $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
SOURCES
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
CONF
  printf 'APT::Install-Recommends "false";\n' >"$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
  # As the official slim images: packages installed later leave out their
  # manuals, documentation and translations too.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CONF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CONF
  # debootstrap leaves the packages it installed in apt's cache (about
  # 33 MB) and every translation (about 33 MB): the slim image has neither.
  find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
  : >"$rootfs/etc/hostname"
  tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
}

build_rust() {
  local want=${RUST_IMAGE#*:}; want=${want%%-*}
  local sysroot have
  sysroot=$(rustc --print sysroot)
  have=$(rustc --version | awk '{print $2}')
  case "$have" in
    "$want"|"$want".*) ;;
    *) say "this machine's rustc is $have but $RUST_IMAGE needs $want: install it with rustup or set RUST_IMAGE"; exit 1 ;;
  esac
  local tc=/usr/local/rustup/toolchains/$have-x86_64-unknown-linux-gnu
  docker run --name apex-base-build -v "$sysroot:/toolchain:ro" "$DEBIAN_IMAGE" bash -euc "
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends ca-certificates gcc libc6-dev >/dev/null
    rm -rf /var/lib/apt/lists/*
    mkdir -p $tc /usr/local/cargo/bin
    tar -C /toolchain --exclude=./share/doc -c . | tar -C $tc -x
    for b in $tc/bin/*; do ln -s \$b /usr/local/cargo/bin/; done
    PATH=/usr/local/cargo/bin:$PATH cargo --version && PATH=/usr/local/cargo/bin:$PATH rustc --version" >&2
  docker commit \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV RUST_VERSION=$have" \
    --change 'CMD ["bash"]' apex-base-build "$RUST_IMAGE" >/dev/null
  docker rm apex-base-build >/dev/null
}

build_prometheus() {
  local want=${PROMETHEUS_IMAGE#*:v}
  # Laid out as the official image is: binaries in /bin, config in
  # /etc/prometheus, data in /prometheus, running as nobody, busybox-like wget
  # for healthchecks.
  docker build -q -t "$PROMETHEUS_IMAGE" - >/dev/null <<DOCKERFILE
FROM $DEBIAN_IMAGE
RUN apt-get update \\
 && apt-get install -y --no-install-recommends prometheus=$want+\* wget ca-certificates \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /prometheus /etc/prometheus /usr/share/prometheus \\
 && ln -sfn /usr/share/prometheus/web/ui/static /usr/share/prometheus/static 2>/dev/null || true \\
 && chown -R nobody:nogroup /prometheus /etc/prometheus \\
 && prometheus --version
USER nobody
EXPOSE 9090
VOLUME ["/prometheus"]
WORKDIR /prometheus
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
DOCKERFILE
}

if need "$DEBIAN_IMAGE"; then build_debian; say "$DEBIAN_IMAGE: built"; fi
if need "$RUST_IMAGE"; then build_rust; say "$RUST_IMAGE: built"; fi
if need "$PROMETHEUS_IMAGE"; then build_prometheus; say "$PROMETHEUS_IMAGE: built"; fi
if ! present "$GRAFANA_IMAGE" && ! pullable "$GRAFANA_IMAGE"; then
  say "$GRAFANA_IMAGE: absent and cannot be pulled, and cannot be built here; the stack runs without it (start services by name)"
fi
