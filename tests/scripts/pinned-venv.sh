# Sourced by install-deps.sh and bench-deps.sh (SUDO set by them): a virtualenv at $1
# holding exactly the pinned packages $2 (space-separated); made again when the pins
# change. Idempotent.
pinned_venv() {
    local venv="$1" pins="$2"
    if [ ! -f "$venv/pins" ] || [ "$(cat "$venv/pins")" != "$pins" ]; then
        $SUDO /usr/bin/python3 -m venv "$venv"
        # shellcheck disable=SC2086
        $SUDO "$venv/bin/pip" install -q --disable-pip-version-check $pins
        echo "$pins" | $SUDO tee "$venv/pins" >/dev/null
    fi
}
