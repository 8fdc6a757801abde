#!/usr/bin/env bash
# Runs Bastion from a build tree in the foreground, as `sudo make run` does:
#
#   1. bastion-agent, as root (in network namespace $NETNS when set);
#   2. bastion-uiserver, the invoking user's rules service, as $SUDO_USER;
#   3. a prompt client, as that user: bastion-gtk when a display is
#      available (DISPLAY or WAYLAND_DISPLAY) and bin/bastion-gtk was built,
#      otherwise `bastionctl prompt` on this terminal (works over ssh).
#
# Ctrl-C (or the prompt client ending, or any component dying) stops them
# all, in reverse order: the agent last, so that it answers what it holds and
# removes exactly the firewall rules it added. Ctrl-C is the normal way to
# stop: the script then exits 0 once the agent has removed its rules.
#
# Environment (all optional):
#   BIN                   where the binaries are (default: <repo>/bin)
#   NETNS                 confine the agent to this network namespace,
#                         created if missing (and kept: ip netns delete NAME)
#   AGENT_ARGS            more bastion-agent flags (bastion-agent -h)
#   BASTION_USER          whose rules service and prompts (default: SUDO_USER)
#   BASTION_PROMPT        auto (default), gtk, terminal or none
#   BASTION_AGENT_SOCKET  the agent's socket (default /run/bastion/agent.sock)
#   BASTION_UI_SOCKET     the rules service's socket
#                         (default /run/user/UID/bastion/ui.sock)
#   BASTION_DATA_DIR      the rules service's data directory
#                         (default ~/.local/share/bastion)
#   BASTION_LOG_DIR       where the agent's and the rules service's logs go
#                         (default: a new /tmp/bastion-run.XXXXXX)
#   BASTION_START_TIMEOUT seconds each component has to come up (default 30)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$repo/bin}
NETNS=${NETNS:-}
AGENT_ARGS=${AGENT_ARGS:-}
run_user=${BASTION_USER:-${SUDO_USER:-}}
prompt_kind=${BASTION_PROMPT:-auto}
agent_sock=${BASTION_AGENT_SOCKET:-/run/bastion/agent.sock}
start_timeout=${BASTION_START_TIMEOUT:-30}

say() { printf 'bastion-run: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (sudo make run)"
for b in bastion-agent bastionctl; do
	[ -x "$BIN/$b" ] || die "$BIN/$b not found: build first (make build)"
done
case $prompt_kind in auto | gtk | terminal | none) ;; *) die "BASTION_PROMPT must be auto, gtk, terminal or none" ;; esac

logdir=${BASTION_LOG_DIR:-$(mktemp -d /tmp/bastion-run.XXXXXX)}
mkdir -p "$logdir"
chmod 0755 "$logdir"

# PIDs of what this script started, stopped in reverse order by cleanup.
agent_pid='' ui_pid='' prompt_pid='' made_rt='' stop_rc=0

# stop NAME PID SECONDS: SIGTERM, then SIGKILL if PID outlives SECONDS.
stop() {
	local what=$1 pid=$2 secs=$3 rc=0
	[ -n "$pid" ] || return 0
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		local end=$((SECONDS + secs))
		while kill -0 "$pid" 2>/dev/null; do
			if ((SECONDS >= end)); then
				say "$what (pid $pid) still running after ${secs}s: killing it"
				kill -KILL "$pid" 2>/dev/null || true
			fi
			sleep 0.1
		done
	fi
	wait "$pid" 2>/dev/null || rc=$?
	stop_rc=$rc
	if [ "$rc" != 0 ]; then
		say "$what exited with status $rc"
	fi
	return 0
}

cleanup() {
	local rc=$?
	set +e
	# A second Ctrl-C must not cut short the agent's removal of its rules;
	# every step below has a deadline.
	trap '' INT TERM HUP
	stop "prompt client" "$prompt_pid" 5
	stop "rules service" "$ui_pid" 15
	# The agent's own removal of its rules has a 30 s deadline.
	if [ -n "$agent_pid" ]; then
		stop "agent" "$agent_pid" 45
		if [ "$stop_rc" = 0 ]; then
			say "agent stopped and removed its firewall rules"
		else
			say "the agent did not stop cleanly: check its log and, if needed, iptables-save | grep BASTION"
			show_log agent.log
			rc=1
		fi
	fi
	if [ -n "$made_rt" ]; then
		rm -rf "$made_rt"
	fi
	say "logs: $logdir"
	exit "$rc"
}
trap cleanup EXIT
# Ctrl-C is how a person stops Bastion: a clean stop exits 0 (a non-zero
# status would have make report "Error 130" after a normal run).
trap 'say "stopping"; exit 0' INT
trap 'say "stopping"; exit 143' TERM HUP

# wait_ready WHAT PID CMD...: runs CMD until it succeeds; fails when PID
# exits first or the start timeout passes.
wait_ready() {
	local what=$1 pid=$2 end=$((SECONDS + start_timeout))
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ! kill -0 "$pid" 2>/dev/null; then
			say "$what exited during start-up; its log ($logdir):"
			return 1
		fi
		if ((SECONDS > end)); then
			say "$what not ready within ${start_timeout}s"
			return 1
		fi
		sleep 0.1
	done
}

show_log() { tail -n 20 "$logdir/$1" >&2 || true; }

# The network namespace.
if [ -n "$NETNS" ] && [ ! -e "/run/netns/$NETNS" ]; then
	ip netns add "$NETNS"
	ip -n "$NETNS" link set lo up
	say "created network namespace $NETNS (remove it with: ip netns delete $NETNS)"
fi

# 1. The agent, as root, in its own session so that the terminal's Ctrl-C
# reaches only this script, which stops it last. --pdeathsig stops it too if
# this script is killed outright.
agent_args=(--socket "$agent_sock")
[ -n "$NETNS" ] && agent_args+=(--netns "$NETNS" --intercept-loopback)
# shellcheck disable=SC2206 # AGENT_ARGS is a list of flags
agent_args+=($AGENT_ARGS)
setsid setpriv --pdeathsig TERM -- "$BIN/bastion-agent" "${agent_args[@]}" </dev/null >"$logdir/agent.log" 2>&1 &
agent_pid=$!
say "bastion-agent pid $agent_pid${NETNS:+ in network namespace $NETNS}, log $logdir/agent.log"
if ! wait_ready "bastion-agent" "$agent_pid" "$BIN/bastionctl" --agent-socket "$agent_sock" --ui-socket /nonexistent status; then
	show_log agent.log
	exit 1
fi

if [ -z "$run_user" ] || [ "$run_user" = root ]; then
	say "no invoking user (run sudo from your own account, or set BASTION_USER): only the agent runs."
	say "answer held connections with: sudo $BIN/bastionctl pending --watch / decide ID allow; Ctrl-C stops"
	rc=0
	wait "$agent_pid" || rc=$?
	agent_pid=''
	say "the agent exited (status $rc)"
	show_log agent.log
	exit 1
fi

# 2. The user's session environment.
uid=$(id -u "$run_user") || die "no user $run_user"
gid=$(id -g "$run_user")
home=$(getent passwd "$run_user" | cut -d: -f6)
rt=/run/user/$uid
if [ ! -d "$rt" ]; then
	# No login session made it (su, ssh without pam_systemd): make it as
	# logind would, and remove it at the end.
	install -d -m 0755 /run/user
	install -d -m 0700 -o "$uid" -g "$gid" "$rt"
	made_rt=$rt
fi
[ "$(stat -c %u "$rt")" = "$uid" ] || die "$rt is not owned by $run_user"
ui_sock=${BASTION_UI_SOCKET:-$rt/bastion/ui.sock}

user_env=(HOME="$home" USER="$run_user" LOGNAME="$run_user" SHELL=/bin/sh
	PATH=/usr/local/bin:/usr/bin:/bin LANG="${LANG:-C.UTF-8}" TERM="${TERM:-dumb}"
	XDG_RUNTIME_DIR="$rt")
if [ -S "$rt/bus" ]; then
	user_env+=(DBUS_SESSION_BUS_ADDRESS="unix:path=$rt/bus")
fi

# "${as_user[@]}" CMD...: runs CMD as the user with the session environment
# and no capabilities. setpriv and env exec, so $! is CMD's own PID (a shell
# function run with & would be a subshell instead).
set_as_user() {
	as_user=(setpriv --reuid="$uid" --regid="$gid" --init-groups --inh-caps=-all -- env -i "${user_env[@]}")
}
set_as_user

ui_args=(--agent-socket "$agent_sock" --socket "$ui_sock")
[ -n "${BASTION_DATA_DIR:-}" ] && ui_args+=(--data-dir "$BASTION_DATA_DIR")
[ -x "$BIN/bastion-uiserver" ] || die "$BIN/bastion-uiserver not found: build first (make build)"
"${as_user[@]}" "$BIN/bastion-uiserver" "${ui_args[@]}" </dev/null >"$logdir/uiserver.log" 2>&1 &
ui_pid=$!
say "bastion-uiserver pid $ui_pid as $run_user, log $logdir/uiserver.log"
ui_connected() {
	"${as_user[@]}" "$BIN/bastionctl" --agent-socket "$agent_sock" --ui-socket "$ui_sock" --json status | grep -Eq '"agent_connected":[[:space:]]*true'
}
if ! wait_ready "bastion-uiserver" "$ui_pid" ui_connected; then
	show_log uiserver.log
	exit 1
fi

# hints: what to try and how to reach bastionctl, printed whichever prompt
# client runs (the README's Quick start gives the same commands).
hints() {
	if [ -n "$NETNS" ]; then
		say "Bastion guards network namespace $NETNS only; try it from another terminal:"
		say "  sudo ip netns exec $NETNS python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &"
		say "  sudo ip netns exec $NETNS runuser -u $run_user -- curl -sS -m 60 -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:8000/"
	else
		say "Bastion guards this machine's outbound connections; try, as $run_user: curl -sS -o /dev/null https://example.com/"
	fi
	say "bastionctl is $BIN/bastionctl; to type just bastionctl in another terminal: export PATH=\"$BIN:\$PATH\""
}

# 3. The prompt client.
if [ "$prompt_kind" = auto ]; then
	prompt_kind=terminal
	if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
		if [ -x "$BIN/bastion-gtk" ]; then
			prompt_kind=gtk
		else
			say "a display is available but $BIN/bastion-gtk was not built: prompting in this terminal"
		fi
	fi
fi
ctl=("$BIN/bastionctl" --agent-socket "$agent_sock" --ui-socket "$ui_sock")
case $prompt_kind in
gtk)
	[ -x "$BIN/bastion-gtk" ] || die "$BIN/bastion-gtk not found: build it first"
	for v in DISPLAY WAYLAND_DISPLAY XAUTHORITY; do
		[ -n "${!v:-}" ] && user_env+=("$v=${!v}")
	done
	if [ -z "${XAUTHORITY:-}" ] && [ -f "$home/.Xauthority" ]; then
		user_env+=(XAUTHORITY="$home/.Xauthority")
	fi
	set_as_user
	"${as_user[@]}" "$BIN/bastion-gtk" --ui-socket "$ui_sock" </dev/null >"$logdir/gtk.log" 2>&1 &
	prompt_pid=$!
	say "bastion-gtk pid $prompt_pid as $run_user, log $logdir/gtk.log"
	say "Bastion is running${NETNS:+ in network namespace $NETNS}; prompts appear on your desktop. Ctrl-C here stops it."
	hints
	;;
terminal)
	say "Bastion is running${NETNS:+ in network namespace $NETNS}; prompts appear below. Ctrl-C stops it."
	hints
	# A background job's stdin would be /dev/null: hand it this terminal.
	exec 3<&0
	"${as_user[@]}" "${ctl[@]}" prompt <&3 3<&- &
	prompt_pid=$!
	exec 3<&-
	;;
none)
	say "Bastion is running${NETNS:+ in network namespace $NETNS} without a prompt client; Ctrl-C stops it"
	hints
	;;
esac

# Run until Ctrl-C (the INT trap) or until one of them ends by itself.
set +e
wait -n $agent_pid $ui_pid $prompt_pid
rc=$?
set -e
ended=''
if ! kill -0 "$agent_pid" 2>/dev/null; then
	ended=agent agent_pid=''
	show_log agent.log
elif ! kill -0 "$ui_pid" 2>/dev/null; then
	ended="rules service" ui_pid=''
	show_log uiserver.log
elif [ -n "$prompt_pid" ] && ! kill -0 "$prompt_pid" 2>/dev/null; then
	ended="prompt client" prompt_pid=''
fi
say "${ended:-a component} exited (status $rc): stopping the rest"
# The user quitting the prompt (q, end of input) is a normal end.
[ "$ended" = "prompt client" ] && [ "$rc" = 0 ] && exit 0
exit 1
