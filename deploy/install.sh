#!/bin/sh
# Install capsem-proxyd for the systemd unit, from this source tree (run as root: see the README,
# "Running under systemd").
#
#   sudo env PATH="$PATH" deploy/install.sh [--extra pii] [--with PACKAGE]... [--python PYTHON]
#
# What goes where (each directory can be changed, as the tests do):
#   /opt/capsem-proxyd            a virtual environment with the versions of uv.lock, without the
#                                 development tools (--prefix); the unit runs its bin/capsem-proxyd
#   /usr/local/bin/capsem-proxyd  a link to it, for the operator's shell (--bin-dir)
#   /etc/systemd/system/capsem-proxyd.service                                 (--unit-dir)
#   /etc/capsem-proxyd/env        the service's settings, written only when absent (--conf-dir)
#
# Nothing of it may live under /root or /home: the unit's ProtectHome=yes hides both from the
# service, so an interpreter there (pyenv, uv's own Pythons in ~/.local/share/uv) cannot start it.
# The script refuses one; give --python /usr/bin/python3.12 (or any Python >= 3.11 outside a home),
# or let uv install one under the prefix: --python 3.12 with UV_PYTHON_INSTALL_DIR=/opt/capsem-proxyd/python.
set -eu

source_dir=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/capsem-proxyd
bin_dir=/usr/local/bin
unit_dir=/etc/systemd/system
conf_dir=/etc/capsem-proxyd
python=
extras=
with=

while [ $# -gt 0 ]; do
    case $1 in
        --prefix) prefix=$2; shift 2 ;;
        --bin-dir) bin_dir=$2; shift 2 ;;
        --unit-dir) unit_dir=$2; shift 2 ;;
        --conf-dir) conf_dir=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --extra) extras="$extras --extra $2"; shift 2 ;;
        --with) with="$with $2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

under_home() {
    case $1 in /root|/root/*|/home|/home/*) return 0 ;; *) return 1 ;; esac
}

if under_home "$prefix"; then
    echo "install.sh: --prefix $prefix is under a home directory, which ProtectHome=yes hides from the service" >&2
    exit 2
fi

# The locked versions, the project itself built and installed (not linked to this tree), byte code
# compiled now: the service's file system is read-only (ProtectSystem=strict).
# shellcheck disable=SC2086
UV_PROJECT_ENVIRONMENT=$prefix uv sync --project "$source_dir" --frozen --no-dev --no-editable \
    --compile-bytecode --link-mode copy ${python:+--python "$python"} $extras
if [ -n "$with" ]; then  # policy packages (a path, a wheel or a registry name) beside the proxy
    # shellcheck disable=SC2086
    uv pip install --python "$prefix/bin/python" --link-mode copy --compile-bytecode $with
fi

interpreter=$(readlink -f "$prefix/bin/python")
if under_home "$interpreter"; then
    echo "install.sh: the interpreter $interpreter is under a home directory, which ProtectHome=yes hides from" \
         "the service: give --python with a Python >= 3.11 outside /root and /home (e.g. /usr/bin/python3.12)" >&2
    exit 2
fi
"$prefix/bin/capsem-proxyd" --version

mkdir -p "$bin_dir" "$unit_dir" "$conf_dir"
ln -sf "$prefix/bin/capsem-proxyd" "$bin_dir/capsem-proxyd"
sed "s|/opt/capsem-proxyd/|$prefix/|g" "$source_dir/capsem-proxyd.service" > "$unit_dir/capsem-proxyd.service"
chmod 644 "$unit_dir/capsem-proxyd.service"
if [ ! -e "$conf_dir/env" ]; then
    install -m 644 "$source_dir/deploy/capsem-proxyd.env" "$conf_dir/env"
fi
echo "installed: $prefix/bin/capsem-proxyd ($interpreter), $unit_dir/capsem-proxyd.service, settings in $conf_dir/env"
echo "next: systemctl daemon-reload && systemctl enable --now capsem-proxyd"
