#!/usr/bin/env bash
# Set up everything library-syncer needs on a Debian machine (run as root):
# the Debian tools it drives (OpenSSH, rsync, ...) and the Python package in ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(rsync openssh-server openssh-client openssl bsdutils passwd iproute2 nftables curl
              caddy pebble chromium fonts-dejavu-core systemd
              # the deployment tests: build and run the images, boot the units under systemd-nspawn
              podman buildah runc conmon netavark aardvark-dns iptables podman-compose
              debootstrap systemd-container util-linux ca-certificates
              # the real-disk benchmark: ext4 images made from folders, converted to VMDKs
              qemu-utils e2fsprogs)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p /run/sshd && chmod 0755 /run/sshd  # sshd privilege separation folder

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    echo "setup: installing python3-venv"
    apt-get install -y -qq python3-venv >/dev/null
    rm -rf .venv
    "$PY" -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
  | grep -v -e "^WARNING: Location" -e "Running pip as the 'root' user" || true
.venv/bin/python -c "import library_syncer" 

# vcsim (govmomi's vSphere API simulator) for the vCenter notification tests. Debian ships the
# simulator packages (golang-github-vmware-govmomi-dev) but not upstream's command: build the small
# main in scripts/vcsim/ with Debian's Go, offline, in GOPATH mode (about 20 s on 2 cores, cold).
VCSIM=.venv/bin/vcsim
if [ ! -x "$VCSIM" ] || [ scripts/vcsim/main.go -nt "$VCSIM" ]; then
  for p in golang-go golang-github-vmware-govmomi-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || {
      echo "setup: installing Debian package $p"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null; }
  done
  gopath=$(mktemp -d)
  mkdir -p "$gopath/src/vcsim" && cp scripts/vcsim/main.go "$gopath/src/vcsim/"
  echo "setup: building vcsim from Debian's govmomi $(dpkg-query -W -f='${Version}' golang-github-vmware-govmomi-dev)"
  start=$SECONDS
  (cd "$gopath/src/vcsim" && GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$gopath/cache" \
     GOFLAGS= go build -o "$OLDPWD/$VCSIM" .)
  rm -rf "$gopath"
  echo "setup: vcsim built in $((SECONDS - start)) s"
fi
echo "setup: ready ($(.venv/bin/library-syncer --version))"
