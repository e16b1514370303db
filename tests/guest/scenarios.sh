# Several scenario scripts in one boot of the rescue system: a boot costs
# 30-60 s under TCG, so the CI pays for it once (tests/guest/conftest.py
# `guest_scenarios` appends one `scenario SCRIPT DISK...` line per scenario
# and puts the scripts in $LIFERAFT_GUEST_MEDIUM/files/). Each script runs in
# its own bash and session with its own disks as arguments, framed by
# "SCENARIO <script> begin" and "SCENARIO <script> exit <code>" so its checks
# are asserted per scenario; a failing scenario does not stop the next. After
# each: its leftover processes are killed, /mnt/* unmounted, volume groups
# deactivated and its disks wiped, so the next scenario (which may create a
# volume group of the same name) starts from a clean machine.
set -uo pipefail
export LVM_SUPPRESS_FD_WARNINGS=1
files=$LIFERAFT_GUEST_MEDIUM/files

tidy() {  # DISK...
    findmnt -rn -o TARGET | grep '^/mnt/' | sort -r | while read -r target; do
        umount "$target" 2>/dev/null || umount -l "$target"
    done
    vgchange -q -an >/dev/null 2>&1
    for disk in "$@"; do
        for part in "$disk"?*; do
            [ -b "$part" ] && wipefs -q -a "$part"
        done
        wipefs -q -a "$disk"
        partprobe "$disk" 2>/dev/null
    done
    udevadm settle
}

scenario() {  # SCRIPT DISK...
    local script=$1 rc=0 pid
    shift
    echo "SCENARIO $script begin"
    # Its own session: a background job it leaves behind (a writer, after a
    # failure) is killed with the group instead of running into the next.
    setsid -w bash "$files/$script" "$@" </dev/null &
    pid=$!
    wait "$pid" || rc=$?
    kill -KILL -- "-$pid" 2>/dev/null
    tidy "$@" || echo "SCENARIO $script: its disks could not be wiped"
    echo "SCENARIO $script exit $rc"
}

