# Sourced by run.sh and test.sh: create ./.venv if needed, activate it, install the project with extra $1.
python3 -m venv .venv
. .venv/bin/activate
pip install --quiet --upgrade "pip>=24"
pip install --quiet -e ".[$1]"
