#!/usr/bin/env bash
# packaging/build.sh deb|rpm...: builds the programs in release mode and
# makes the system packages in target/packages/:
#
#   deb  audisp_VERSION-1_ARCH.deb and audisp-dbgsym_VERSION-1_ARCH.deb (cargo-deb)
#   rpm  audisp-VERSION-1.ARCH.rpm and audisp-debuginfo-VERSION-1.ARCH.rpm
#        (cargo-generate-rpm)
#
# What goes where is decided here, once, in stage(), from what the source
# tree has; nothing lists programs, units or pages by name:
#
#   every program cargo builds     /usr/sbin, or /usr/bin when its man page
#                                  is in section 1 (docs/NAME.1.md); stripped,
#                                  with its debug info in the -dbgsym/-debuginfo
#                                  package (/usr/lib/debug/.build-id/)
#   docs/NAME.N.md                 man page NAME(N) (packaging/man.sh)
#   docs/*.md (other), README.md   /usr/share/doc/audisp/
#   units/*.service, *.socket      /usr/lib/systemd/system/
#   packaging/audisp.{sysusers,tmpfiles,preset}  /usr/lib/{sysusers.d,tmpfiles.d,systemd/system-preset}/
#   dbus/*.conf, dbus/*.xml        /usr/share/dbus-1/{system.d,interfaces}/
#   packaging/*.toml               /etc/audisp/ (conffiles)
#   plugins.d/*.example            /etc/audisp/plugins.d/ (conffiles)
#   packaging/*.conf               /etc/audit/plugins.d/ (auditd's plugins; conffiles)
#
# Cargo.toml's [package.metadata.deb] and [package.metadata.generate-rpm]
# take the staged tree (target/packages/root) by directory, so a new
# program, unit, page or example needs no edit here or there; a new kind of
# location needs a line in stage() and an asset line in both tables.
#
# Tools: cargo-deb and cargo-generate-rpm (installed with `cargo install
# --locked` when missing), lowdown and objcopy (apt, when root).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB=3.8.0
CARGO_GENERATE_RPM=0.21.1
out=target/packages
root=$out/root
debug=$out/debug

usage() {
    echo "usage: packaging/build.sh deb|rpm..." >&2
    exit 2
}

# Installs Debian packages that provide the named commands, if missing.
need_apt() {
    local missing=()
    while (($#)); do
        command -v "$1" >/dev/null || missing+=("$2")
        shift 2
    done
    ((${#missing[@]})) || return 0
    if [ "$(id -u)" != 0 ]; then
        echo "packaging/build.sh: needs ${missing[*]}: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Installs a cargo subcommand at a fixed version, if missing.
need_cargo() {
    local crate=$1 version=$2
    if ! cargo "${crate#cargo-}" --version >/dev/null 2>&1; then
        cargo install --locked "$crate@$version"
    fi
}

# Builds the release programs; prints the path of each executable.
build() {
    cargo build --release --locked --bins --message-format=json-render-diagnostics |
        grep '"reason":"compiler-artifact"' |
        grep '"kind":\["bin"\]' |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' |
        sort
}

# The section of NAME's man page (docs/NAME.N.md); fails without one.
man_section() {
    local pages=(docs/"$1".[1-8].md)
    if [ ! -e "${pages[0]}" ]; then
        echo "packaging/build.sh: program $1 has no man page docs/$1.N.md" >&2
        exit 1
    fi
    local page=${pages[0]%.md}
    echo "${page##*.}"
}

# Strips one program into the staged tree; its debug info goes to the debug
# tree under its build id, linked from the program by .gnu_debuglink.
strip_into() {
    local exe=$1 dest=$2
    local id
    id=$(readelf -n "$exe" | sed -n 's/.*Build ID: \([0-9a-f]*\).*/\1/p')
    if [ -z "$id" ]; then
        echo "packaging/build.sh: $exe has no build id" >&2
        exit 1
    fi
    local dbg=$debug/usr/lib/debug/.build-id/${id:0:2}/${id:2}.debug
    mkdir -p "$(dirname "$dbg")" "$(dirname "$dest")"
    objcopy --only-keep-debug --compress-debug-sections=zlib "$exe" "$dbg"
    chmod 0644 "$dbg"
    objcopy --strip-debug --strip-unneeded --remove-section=.comment \
        --add-gnu-debuglink="$dbg" "$exe" "$dest"
    chmod 0755 "$dest"
}

# Fills in a maintainer script template: the unit lists, and the lines of
# the sysusers.d file.
script() {
    local units services
    units=$(cd units && ls -- *.socket *.service | tr '\n' ' ')
    services=$(cd units && ls -- *.service | tr '\n' ' ')
    mkdir -p "$(dirname "$2")"
    grep -v '^#' packaging/audisp.sysusers >"$out/scripts/sysusers"
    sed -e "s/@UNITS@/${units% }/" -e "s/@SERVICES@/${services% }/" \
        -e "/^@SYSUSERS@$/{r $out/scripts/sysusers" -e "d}" "$1" >"$2"
    chmod 0755 "$2"
}

# Lays out the install tree in $root and the debug tree in $debug, from
# the source tree and the programs given.
stage() {
    local version=$1
    shift
    rm -rf "$root" "$debug" "$out/scripts"
    local exe name section
    for exe in "$@"; do
        name=$(basename "$exe")
        section=$(man_section "$name")
        if [ "$section" = 1 ]; then
            strip_into "$exe" "$root/usr/bin/$name"
        else
            strip_into "$exe" "$root/usr/sbin/$name"
        fi
    done
    local page
    for page in docs/*.[1-8].md; do
        packaging/man.sh "$page" "$root/usr/share/man" "$version"
    done
    install -D -m 0644 -t "$root/usr/share/doc/audisp" README.md
    for page in docs/*.md; do
        case $page in docs/*.[1-8].md) ;; *) install -m 0644 "$page" "$root/usr/share/doc/audisp/" ;; esac
    done
    install -D -m 0644 -t "$root/usr/lib/systemd/system" units/*.service units/*.socket
    install -D -m 0644 packaging/audisp.sysusers "$root/usr/lib/sysusers.d/audisp.conf"
    install -D -m 0644 packaging/audisp.tmpfiles "$root/usr/lib/tmpfiles.d/audisp.conf"
    install -D -m 0644 packaging/audisp.preset "$root/usr/lib/systemd/system-preset/80-audisp.preset"
    install -D -m 0644 -t "$root/usr/share/dbus-1/system.d" dbus/*.conf
    install -D -m 0644 -t "$root/usr/share/dbus-1/interfaces" dbus/*.xml
    install -D -m 0644 -t "$root/etc/audisp" packaging/*.toml
    install -D -m 0644 -t "$root/etc/audisp/plugins.d" plugins.d/*.example
    install -D -m 0644 -t "$root/etc/audit/plugins.d" packaging/*.conf
    local template
    for template in packaging/debian/*; do
        script "$template" "$out/scripts/debian/$(basename "$template")"
    done
    for template in packaging/rpm/*.sh; do
        script "$template" "$out/scripts/rpm/$(basename "$template")"
    done
    # The debug package has no maintainer scripts.
    mkdir -p "$out/scripts/none"
    # Debian's changelog: one entry, for this build, by the package's maintainer.
    local maintainer when
    maintainer=$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml)
    when=$(git log -1 --format=%cD 2>/dev/null || date -R)
    {
        printf 'audisp (%s-1) unstable; urgency=medium\n\n' "$version"
        printf '  * Built by packaging/build.sh from %s.\n\n' \
            "$(git describe --always --dirty 2>/dev/null || echo "audisp $version")"
        printf ' -- %s  %s\n' "$maintainer" "$when"
    } >"$out/changelog"
}

(($#)) || usage
for kind in "$@"; do
    case $kind in deb | rpm) ;; *) usage ;; esac
done
need_apt lowdown lowdown objcopy binutils readelf binutils
for kind in "$@"; do
    case $kind in
    deb) need_cargo cargo-deb "$CARGO_DEB" ;;
    rpm) need_cargo cargo-generate-rpm "$CARGO_GENERATE_RPM" ;;
    esac
done

version=$(cargo pkgid --locked | sed 's/.*[#@]//')
mapfile -t exes < <(build)
if ((${#exes[@]} == 0)); then
    echo "packaging/build.sh: cargo built no programs" >&2
    exit 1
fi
stage "$version" "${exes[@]}"
mkdir -p "$out"
for kind in "$@"; do
    case $kind in
    deb)
        rm -f "$out"/audisp_*.deb "$out"/audisp-dbgsym_*.deb
        # The system's xz and gzip: cargo-deb's own take a minute more. The
        # debug info is compressed already (zlib sections): gzip -1 for it.
        cargo deb --no-build --no-strip --locked --compress-system --output "$out/"
        cargo deb --no-build --no-strip --locked --compress-system -Z gz --fast \
            --variant dbgsym --output "$out/"
        ;;
    rpm)
        rm -f "$out"/audisp-*.rpm
        cargo generate-rpm --variant main --output "$out/"
        cargo generate-rpm --variant debuginfo --payload-compress gzip --output "$out/"
        ;;
    esac
done
ls -l "$out"/*.deb "$out"/*.rpm 2>/dev/null || true
