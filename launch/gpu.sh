#!/usr/bin/env bash
# Train or sample with abcjax on one GPU machine or several, over plain ssh.
#
#   launch/gpu.sh setup|train|sample [--hosts HOST,HOST...] [--dry-run] [options] [-- abcjax arguments]
#
# Subcommands:
#   setup   on each host: copy this checkout there (scp) and install abcjax and jax[cuda13] into
#           ~/abcjax/.venv (--git URL [--ref REF]: clone that repository there instead)
#   train   `abcjax train ARGS`, one process per host, started together. With several hosts,
#           process I runs on host I with --coordinator_address HOST0:PORT --num_processes N
#           --process_id I (host 0 is the coordinator); each host appends its output to
#           ~/abcjax/logs/train-I.log, and it shows here too. Waits for all of them; the exit code
#           is non-zero when any fails. With one host: one process there, no coordinator flags.
#           Without --hosts: one process here (abcjax from PATH), no coordinator flags.
#   sample  the same for `abcjax sample ARGS`; process 0 writes the tunes (give --out a path on a
#           file system all hosts share, or fetch it from host 0 afterwards)
#
# Options (flag, else environment variable, else default):
#   --hosts H0,H1,...    ABCJAX_HOSTS              ssh destinations (user@host or ~/.ssh/config names)
#   --port PORT          ABCJAX_COORDINATOR_PORT   8476: the coordinator's port on host 0
#   --coordinator HOST   ABCJAX_COORDINATOR_HOST   host 0's address as the others reach it
#                                                  (default: host 0's name without user@)
#   --git URL, --ref REF ABCJAX_GIT_URL            setup: clone URL at REF (default HEAD) instead
#   --dry-run                                      print each command, shell-quoted, instead of running it
#   --config.KEY=VALUE and anything after `--`     passed to abcjax as they are; train and sample need
#                                                  --workdir, on a file system every host shares
#                                                  (NFS) or a gs:// bucket
#
# Example, two machines with 8 GPUs each (16 devices, one process per machine):
#   launch/gpu.sh setup --hosts gpu1,gpu2
#   launch/gpu.sh train --hosts gpu1,gpu2 -- --config configs/default.py --workdir /shared/runs/irish
#   launch/gpu.sh sample --hosts gpu1,gpu2 -- --workdir /shared/runs/irish --num_tunes 1000 --out /shared/tunes.abc
#
# Common problems:
#   - A run that hangs at start: every process waits for all N to reach the coordinator. Check that
#     host 0's name resolves on the other hosts (else --coordinator IP), that PORT is open between
#     them (a firewall), and the other processes' logs.
#   - Processes out of step (different abcjax or jax versions): run setup again on all hosts.
#   - Ctrl-C here ends the ssh sessions; a remote process may run on until its next output line.
#   - "No GPU found" in a log: the host's NVIDIA driver must suit the CUDA 13 wheels of jax[cuda13].
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

HOSTS=${ABCJAX_HOSTS:-}
PORT=${ABCJAX_COORDINATOR_PORT:-8476}
COORDINATOR=${ABCJAX_COORDINATOR_HOST:-}
GIT_URL=${ABCJAX_GIT_URL:-}
GIT_REF=HEAD
HOST_LIST=()
PIDS=()

# The flags that take a value, and the variable each sets; gpu.sh has no switches but --dry-run.
VALUE_FLAGS='--hosts:HOSTS --port:PORT --coordinator:COORDINATOR --git:GIT_URL --ref:GIT_REF'
SWITCHES=''

# 0 when abcjax's arguments include the flag (as --flag VALUE or --flag=VALUE).
passes_flag() {
  local arg
  for arg in ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"}; do
    case $arg in "$1" | "$1"=*) return 0 ;; esac
  done
  return 1
}

# Checks the subcommand and its options and splits --hosts, before anything runs.
validate() {
  case $SUBCOMMAND in
    setup)
      [ ${#PASSTHROUGH[@]} = 0 ] || die "setup passes no arguments to abcjax"
      [ -n "$HOSTS" ] || die "setup needs --hosts; on this machine run: pip install -e . 'jax[cuda13]'"
      ;;
    train | sample) passes_flag --workdir || die "$SUBCOMMAND needs abcjax's --workdir DIR (after --)" ;;
    *) die "unknown subcommand '$SUBCOMMAND'; one of setup, train, sample" ;;
  esac
  [[ $PORT =~ ^[0-9]+$ ]] || die "--port $PORT: give a port number"
  [ -z "$HOSTS" ] || IFS=, read -r -a HOST_LIST <<<"$HOSTS"
  local host
  for host in ${HOST_LIST[@]+"${HOST_LIST[@]}"}; do
    [ -n "$host" ] || die "--hosts $HOSTS: an empty host name"
  done
}

# Like run, in the background, its pid kept in PIDS; a --dry-run prints in order.
run_in_background() {
  if [ "$DRY_RUN" = 1 ]; then
    run "$@"
    return
  fi
  "$@" &
  PIDS+=("$!")
}

# Waits for every started process; says which failed, and fails if any did.
wait_for_all() {
  local i failed=0
  for i in ${PIDS[@]+"${!PIDS[@]}"}; do
    if ! wait "${PIDS[$i]}"; then
      echo "$SCRIPT: process $i on ${HOST_LIST[$i]} failed; its log: ~/$REMOTE_DIR/logs/$SUBCOMMAND-$i.log there" >&2
      failed=1
    fi
  done
  return "$failed"
}

# The coordinator flags of process I among the hosts (none for a single host).
coordinator_flags() {
  [ ${#HOST_LIST[@]} -gt 1 ] || return 0
  local host0=${HOST_LIST[0]}
  printf '%s\n' --coordinator_address "${COORDINATOR:-${host0#*@}}:$PORT" \
    --num_processes "${#HOST_LIST[@]}" --process_id "$1"
}

# train or sample: here without hosts, else one process per host over ssh.
cmd_run() {
  if [ ${#HOST_LIST[@]} = 0 ]; then
    require_program abcjax "activate the environment abcjax is installed in"
    run abcjax "$SUBCOMMAND" ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"}
    return
  fi
  require_program ssh "install OpenSSH"
  local i flags
  for i in "${!HOST_LIST[@]}"; do
    flags=$(coordinator_flags "$i")
    # shellcheck disable=SC2086  # flags: one word per line, none with spaces
    run_in_background ssh -n "${HOST_LIST[$i]}" "$(abcjax_command "$SUBCOMMAND-$i.log" "$SUBCOMMAND" \
      ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"} $flags)"
  done
  wait_for_all
}

cmd_setup() {
  require_program ssh "install OpenSSH"
  [ -n "$GIT_URL" ] || make_source_tarball
  local host
  for host in "${HOST_LIST[@]}"; do
    [ -n "$GIT_URL" ] || run scp "$SOURCE_TARBALL" "$host:$REMOTE_TARBALL"
    run ssh -n "$host" "$(install_command 'jax[cuda13]' tensorboard)"
  done
}

main() {
  parse_args "$@"
  validate
  case $SUBCOMMAND in
    setup) cmd_setup ;;
    *) cmd_run ;;
  esac
}

main "$@"
