#!/bin/bash
# The LVM drill machine's online backup (tests/drill/test_lvm_drill.py), run
# by its drill-lvm unit from the repository disk mounted at /mnt/repo; kept
# out of lvmkit.py so that a change here does not rebuild the cached machine.
# Writes its key=value figures, one line, to the file named by $1.
#
# The backup is the scheduled one, as an administrator sets it up:
# `liferaft schedule` writes and enables the timer (--now: systemd runs here),
# then the drill starts liferaft-backup@NAME.service, what the timer starts
# when it fires. A second schedule whose repository is unreachable shows how a
# failed run ends: its unit's result, exit status and the journal's error line.
set -u
vg=drill-vg
image=drill-lvm
unit=liferaft-backup@$image
fail=liferaft-backup@drill-fail
out=$1

dpkg -i /mnt/repo/liferaft.deb > /dev/null
systemctl start drill-writer.service
sleep 3
before=$(cat /run/drill-writes)
# what a backup that crashed leaves behind
lvcreate -q -y -s -n liferaft-snap-root -L 32M "$vg/root"
liferaft schedule --repo /mnt/repo/repo --name "$image" --every daily --keep-last 3 2>&1 \
    | sed 's/^/SCHEDULE: /'
timer=$(systemctl is-enabled "$unit.timer")/$(systemctl is-active "$unit.timer")
next=$(systemctl show -p NextElapseUSecRealtime --value "$unit.timer" | tr ' ' _)
started=$(date +%s)
systemctl start "$unit.service"
seconds=$(($(date +%s) - started))
backup=$(systemctl show -p ExecMainStatus --value "$unit.service")
result=$(systemctl show -p Result --value "$unit.service")
writer=$(systemctl is-active drill-writer.service)
# where the writer is: it should have gone on replacing files during the backup
pid=$(systemctl show -p MainPID --value drill-writer.service)
echo "WRITER: pid $pid wchan $(cat "/proc/$pid/wchan" 2>/dev/null) writes $(cat /run/drill-writes)"
# the writer's count, read while it runs: it rewrites the file after each
# file replaced, and stopping it between truncating and writing left it empty
writes=$(cat /run/drill-writes)
[ -n "$writes" ] || { sleep 0.5; writes=$(cat /run/drill-writes); }
systemctl stop drill-writer.service
snaps=$(lvs --noheadings -o lv_name "$vg" | grep -c liferaft-snap)
rootrw=$(findmnt -n -o OPTIONS / | cut -d, -f1)
journalctl --sync
journalctl -q -u "$unit.service" -o cat | sed 's/^/BACKUP: /'

# A run that fails: an SFTP server that does not answer.
liferaft schedule --repo sftp://backup@127.0.0.1:2/repo --name drill-fail --every weekly 2>&1 \
    | sed 's/^/SCHEDULE: /'
systemctl start "$fail.service" && echo "FAIL-UNIT: $fail.service did not fail"
failresult=$(systemctl show -p Result --value "$fail.service")
failstatus=$(systemctl show -p ExecMainStatus --value "$fail.service")
journalctl --sync
journalctl -q -u "$fail.service" -o cat | grep '^liferaft: error: ' | sed 's/^/FAILLOG: /'
faillines=$(journalctl -q -u "$fail.service" -o cat | grep -c '^liferaft: error: ')
liferaft schedule --list 2>&1 | sed 's/^/SCHEDULE: /'
liferaft schedule --remove drill-fail 2>&1 | sed 's/^/SCHEDULE: /'
left=$(liferaft schedule --list | grep -c drill-fail)
liferaft images --repo /mnt/repo/repo 2>&1 | sed 's/^/IMAGES: /'

echo "backup=$backup result=$result seconds=$seconds timer=$timer next=${next:-none}" \
    "writer=$writer before=$before writes=$writes snaps=$snaps rootrw=$rootrw failresult=$failresult" \
    "failstatus=$failstatus faillines=$faillines failleft=$left" > "$out"
