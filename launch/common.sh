# Shared by launch/tpu_vm.sh and launch/gpu.sh (sourced, not run): usage and errors, argument
# parsing, the --dry-run switch, shell quoting, and the remote commands that install abcjax.
# Written for bash 3.2 too (macOS's /bin/bash): no associative arrays, no empty "${array[@]}".

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=$(basename "$0")
PYTHON_VERSION=3.11                            # abcjax's requires-python
SOURCE_TARBALL=${TMPDIR:-/tmp}/abcjax-src.tar.gz
REMOTE_TARBALL=abcjax-src.tar.gz               # in the remote user's home
REMOTE_DIR=abcjax                              # source, .venv, logs/ and out/, in the remote user's home
DRY_RUN=0
SUBCOMMAND=
PASSTHROUGH=()                                 # arguments for abcjax itself

# Prints the comment block at the top of the running script (its usage text).
usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

# One line on stderr and exit code 2: what is wrong and what to do.
die() {
  printf '%s: %s\n' "$SCRIPT" "$*" >&2
  exit 2
}

# One word, quoted for a POSIX shell only where it needs to be, as readably as it can be:
# --flag=VALUE keeps the flag outside the quotes; double quotes where nothing in them expands.
quote_word() {
  if [[ $1 == --?*=* && ${1%%=*} != *[!A-Za-z0-9_.-]* ]]; then
    printf '%s=%s' "${1%%=*}" "$(quote_word "${1#*=}")"
    return
  fi
  case $1 in
    '') printf "''" ;;
    *[!A-Za-z0-9_@%+=:,./-]*)
      case $1 in
        *[\"\$\`\\!]*) printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")" ;;
        *) printf '"%s"' "$1" ;;
      esac
      ;;
    *) printf '%s' "$1" ;;
  esac
}

# The words as one command line that a shell reads back as the same words.
quote_words() {
  local out='' word
  for word in "$@"; do
    out="$out${out:+ }$(quote_word "$word")"
  done
  printf '%s' "$out"
}

# Runs a command, or with --dry-run prints it, shell-quoted, one line.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%s\n' "$(quote_words "$@")"
  else
    "$@"
  fi
}

# Fails unless the program is on PATH (a --dry-run needs none).
require_program() {
  [ "$DRY_RUN" = 1 ] || command -v "$1" >/dev/null || die "$1 not found on PATH; $2"
}

# Fails unless a flag is followed by a value.
need_value() {
  [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ] || die "$1 needs a value"
}

# The variable FLAG sets, from a TABLE of FLAG:VARIABLE words; fails for a flag not in it.
table_variable() {
  local entry
  for entry in $2; do
    if [ "${entry%%:*}" = "$1" ]; then
      printf '%s' "${entry#*:}"
      return 0
    fi
  done
  return 1
}

# Parses `SUBCOMMAND [--flag VALUE | --flag=VALUE | --switch]... [-- ARGS]` into SUBCOMMAND, the
# variables the script's tables VALUE_FLAGS and SWITCHES name, and PASSTHROUGH (the words after
# `--`, and --config.KEY=VALUE overrides given before it). --dry-run counts anywhere.
parse_args() {
  local arg variable
  case ${1-} in
    -h | --help) usage && exit 0 ;;
    '') die "no subcommand given; see $SCRIPT --help" ;;
    -*) die "the subcommand comes first; see $SCRIPT --help" ;;
  esac
  SUBCOMMAND=$1
  shift
  while [ $# -gt 0 ]; do
    arg=$1
    shift
    case $arg in
      --config.*) PASSTHROUGH+=("$arg") && continue ;;
      --) parse_passthrough "$@" && break ;;
      -h | --help) usage && exit 0 ;;
      --dry-run) DRY_RUN=1 && continue ;;
      --*=*) set -- "${arg#*=}" "$@" && arg=${arg%%=*} ;;
      -*) ;;
      *) die "unexpected argument $arg (abcjax's own arguments go after --); see $SCRIPT --help" ;;
    esac
    if variable=$(table_variable "$arg" "$SWITCHES"); then
      printf -v "$variable" '%s' 1
    elif variable=$(table_variable "$arg" "$VALUE_FLAGS"); then
      need_value "$arg" "$@"
      printf -v "$variable" '%s' "$1"
      shift
    else
      die "unknown flag $arg; see $SCRIPT --help"
    fi
  done
}

# Keeps abcjax's arguments in PASSTHROUGH, except --dry-run: abcjax has none, and a dry run
# must never turn into a real one for being typed after `--`.
parse_passthrough() {
  local arg
  for arg in "$@"; do
    if [ "$arg" = --dry-run ]; then DRY_RUN=1; else PASSTHROUGH+=("$arg"); fi
  done
}

# 1 for a true-ish environment value (1, true, yes), 0 for a false-ish or empty one.
truth() {
  case $(printf '%s' "$2" | tr '[:upper:]' '[:lower:]') in
    1 | true | yes | on) printf 1 ;;
    '' | 0 | false | no | off) printf 0 ;;
    *) die "$1=$2: use 1 or 0" ;;
  esac
}

# Packs the local checkout (uncommitted changes included; no .git, .venv or runs) for copying.
make_source_tarball() {
  run tar -czf "$SOURCE_TARBALL" --exclude=.git --exclude=.venv --exclude=runs --exclude=__pycache__ \
    --exclude='*.egg-info' --exclude=.pytest_cache --exclude=.ruff_cache --exclude=./build -C "$REPO" .
}

# The remote command that puts abcjax's source into ~/abcjax: a clone of GIT_URL at GIT_REF, or
# else the tarball make_source_tarball packed and the caller copied to ~/abcjax-src.tar.gz.
fetch_source_command() {
  if [ -n "$GIT_URL" ]; then
    printf '(test -d %s/.git || git clone %s %s) && git -C %s fetch --depth 1 origin %s && git -C %s checkout --force FETCH_HEAD' \
      "$REMOTE_DIR" "$(quote_word "$GIT_URL")" "$REMOTE_DIR" "$REMOTE_DIR" "$(quote_word "$GIT_REF")" "$REMOTE_DIR"
  else
    printf 'mkdir -p %s && tar -xzf %s -C %s' "$REMOTE_DIR" "$REMOTE_TARBALL" "$REMOTE_DIR"
  fi
}

# The remote command that installs abcjax with its Cloud Storage extra (gs:// workdirs) and PACKAGES
# (the JAX build for the accelerator first)
# into ~/abcjax/.venv with uv, which also fetches Python $PYTHON_VERSION where the system has an
# older one (Ubuntu 22.04 has 3.10).
install_command() {
  printf '%s && (test -x ~/.local/bin/uv || curl -LsSf https://astral.sh/uv/install.sh | sh)' "$(fetch_source_command)"
  printf ' && ~/.local/bin/uv venv --allow-existing --python %s %s/.venv' "$PYTHON_VERSION" "$REMOTE_DIR"
  printf ' && ~/.local/bin/uv pip install --python %s/.venv/bin/python -e %s %s' "$REMOTE_DIR" "$(quote_word "./$REMOTE_DIR[gcs]")" "$(quote_words "$@")"
}

# The remote command that runs `abcjax ARGS` in ~/abcjax, appending its output to logs/LOG on that
# machine: in the foreground through tee, or with DETACH=1 under nohup, so that it outlives ssh.
abcjax_command() {
  local log=$1
  shift
  printf 'set -o pipefail; cd %s && mkdir -p logs out && ' "$REMOTE_DIR"
  if [ "${DETACH:-0}" = 1 ]; then
    printf 'nohup .venv/bin/abcjax %s >> logs/%s 2>&1 < /dev/null & echo "started in the background; log: ~/%s/logs/%s"' \
      "$(quote_words "$@")" "$log" "$REMOTE_DIR" "$log"
  else
    printf '.venv/bin/abcjax %s 2>&1 | tee -a logs/%s' "$(quote_words "$@")" "$log"
  fi
}
