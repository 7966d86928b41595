# Sourced by run.sh and test.sh: create ./.venv if needed, activate it, install the project with extra $1.
# pip's own output (and setuptools' build banners) go to .venv/install.log; the console gets one line.
python3 -m venv .venv
. .venv/bin/activate
echo "installing the project with its '$1' extra into ./.venv (log: .venv/install.log)" >&2
if ! { pip install --upgrade "pip>=24" && pip install -e ".[$1]"; } > .venv/install.log 2>&1; then
    tail -n 30 .venv/install.log >&2
    echo "error: the install failed; the whole log is .venv/install.log" >&2
    exit 1
fi
