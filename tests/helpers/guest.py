"""Run a shell script as root inside the rescue system, under QEMU (TCG).

The host kernel has no device-mapper, md or LUKS; the ISO's Debian kernel has
all three. This runner boots the built ISO with the given disk files and runs
one script in it, so LVM, LUKS and RAID work can be tested for real:

    .venv/bin/python -m tests.helpers.guest --iso dist/liferaft-default.iso \\
        --disk a.img --disk b.img [--memory 1536] [--timeout 900] [--app] script.sh

- The disks are attached in the order given as virtio disks: the first is
  /dev/vda in the guest, the next /dev/vdb, and so on, with serials LRDISK0,
  LRDISK1, ... (/dev/disk/by-id/virtio-LRDISK0). Raw images; ``.qcow2`` files
  are attached as qcow2. The ISO is the IDE CD-ROM /dev/sr0.
- The script runs as root under bash, stdin /dev/null, in the runner's medium
  (read-only; $LIFERAFT_GUEST_MEDIUM); write under /tmp or /root (RAM). Its
  output (stdout and stderr) streams to this command's stdout and the command
  exits with the script's exit code. The guest has user networking: the host's
  loopback servers are at 10.0.2.2.
- ``--file PATH`` (repeatable) copies PATH onto the medium's files/ folder
  ($LIFERAFT_GUEST_MEDIUM/files/NAME): e.g. .debs of a tool the ISO lacks, to
  dpkg -i into the guest's RAM root (the ISO keeps its size).
- ``--app`` copies this working tree's rescue_app/ onto the medium and puts it
  first on PYTHONPATH, so `liferaft ...` and `/opt/liferaft/bin/python -m
  rescue_app...` in the script run the engine as it is now, without rebuilding
  the ISO (new Python dependencies still need a rebuild).
- Errors of the runner itself are one line on stderr: bad arguments exit 2, a
  timeout 124, a guest that does not boot or stops before the script ends 125
  (the serial console is kept in a file the line names).

How: the ISO's kernel and initrd are booted directly (-kernel/-append) with
``liferaft.guest=1`` added to the command line. Only then does
liferaft-guest.service (overlay/etc/systemd/system/) start: it mounts the
runner's medium, a small ISO 9660 image labelled LRGUEST attached as a second
CD-ROM (/dev/sr1, so the virtio names stay the caller's), runs script.sh and
writes its output and exit code to the second serial port, framed by lines
holding a nonce the script cannot guess; then the guest powers off. The first
serial port is the usual console (kernel and systemd messages).

Python: ``run_in_guest(iso, disks, script) -> GuestResult``; pytest tests use
the ``guest`` fixture of tests/guest/conftest.py. Boot one guest for several
scenarios: the CI time budget pays for boots, not for scenarios. docs/TESTING.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from builder.context import SERIAL_CMDLINE
from rescue_app.errors import LiferaftError, UsageError

REPO = Path(__file__).resolve().parents[2]
CMDLINE = f"{SERIAL_CMDLINE} liferaft.guest=1"
MEDIUM_LABEL = "LRGUEST"  # kept in sync with overlay/usr/local/sbin/liferaft-guest
DISK_SERIAL = "LRDISK{}"
EXIT_TIMEOUT = 124
EXIT_GUEST_FAILED = 125
# After the script's end the guest powers off; a clean shutdown stops md arrays
# and flushes, so the disk files are consistent. Past this it is killed.
SHUTDOWN_S = 60
POLL_S = 0.2


class GuestError(LiferaftError):
    """The guest did not boot, or stopped before the script's end."""

    exit_code = EXIT_GUEST_FAILED


class GuestTimeout(GuestError):
    exit_code = EXIT_TIMEOUT


@dataclass(frozen=True)
class GuestResult:
    exit_code: int
    output: str  # the script's stdout and stderr, as written
    boot_seconds: float  # QEMU start to the script's start
    seconds: float  # QEMU start to the script's end


def sparse_disk(path: Path, size_bytes: int) -> Path:
    """A blank raw disk image (sparse) for ``--disk``."""
    with open(path, "wb") as f:
        f.truncate(size_bytes)
    return path


def extract_live_kernel(iso: Path, out: Path) -> tuple[Path, Path]:
    """vmlinuz and initrd.img from the ISO, for boots that need extra kernel arguments."""
    for name in ("vmlinuz", "initrd.img"):
        proc = subprocess.run(
            ["xorriso", "-osirrox", "on", "-indev", str(iso),
             "-extract", f"/live/{name}", str(out / name)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise GuestError(f"{iso}: no /live/{name} in it ({last})",
                             hint="build it with `make iso`")  # fmt: skip
    return out / "vmlinuz", out / "initrd.img"


def make_medium(
    workdir: Path, script: str, nonce: str, app: bool, files: Sequence[Path] = ()
) -> Path:
    """The runner's medium: script.sh, the nonce, ``files`` in files/ and,
    with ``app``, rescue_app/."""
    stage = workdir / "medium"
    stage.mkdir()
    (stage / "script.sh").write_text(script)
    (stage / "nonce").write_text(nonce + "\n")
    if files:
        (stage / "files").mkdir()
        for f in files:
            shutil.copy(f, stage / "files" / f.name)
    if app:
        shutil.copytree(REPO / "rescue_app", stage / "app" / "rescue_app",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    image = workdir / "medium.iso"
    proc = subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-rational-rock", "-volid", MEDIUM_LABEL,
         "-o", str(image), str(stage)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise GuestError(f"could not make the script's medium: {last}",
                         hint=f"is there room in {workdir.parent}?")  # fmt: skip
    return image


def qemu_argv(
    iso: Path, kernel: tuple[Path, Path], disks: Sequence[Path], medium: Path,
    console: Path, channel: Path, memory_mb: int,
) -> list[str]:  # fmt: skip
    vmlinuz, initrd = kernel
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb), "-smp", "2",
        # -nodefaults: no floppy (live-boot probes it while it looks for its
        # medium), no VGA; what the guest needs is given explicitly.
        "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", f"file:{console}", "-serial", f"file:{channel}",
        "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", CMDLINE,
        "-cdrom", str(iso),
        "-nic", "user,model=virtio-net-pci",
    ]  # fmt: skip
    for i, disk in enumerate(disks):
        fmt = "qcow2" if disk.suffix == ".qcow2" else "raw"
        serial = DISK_SERIAL.format(i)
        argv += ["-drive", f"file={disk},format={fmt},if=none,id=disk{i}",
                 "-device", f"virtio-blk-pci,drive=disk{i},serial={serial}"]  # fmt: skip
    # A second IDE CD-ROM (sr1): virtio names stay the caller's disks'.
    argv += ["-drive", f"file={medium},format=raw,if=ide,index=3,media=cdrom,readonly=on"]
    return argv


def check_arguments(iso: Path, disks: Sequence[Path], memory_mb: int, timeout: float) -> None:
    """Bad input is one UsageError line, before anything starts."""
    if not iso.is_file():
        raise UsageError(f"no ISO at {iso}", hint="build it with `make iso` or give --iso")
    for disk in disks:
        if not disk.is_file():
            raise UsageError(f"no disk image at {disk}",
                             hint="make one, e.g. `truncate -s 1G a.img`")  # fmt: skip
    if len({d.resolve() for d in disks}) != len(disks):
        raise UsageError("the same disk image is given twice", hint="give each --disk once")
    if len(disks) > 20:
        raise UsageError(f"{len(disks)} disks: at most 20", hint="attach fewer disks")
    if memory_mb < 512:
        raise UsageError(f"--memory {memory_mb}: the live system needs at least 512 MiB",
                         hint="the default is 1536")  # fmt: skip
    if timeout <= 0:
        raise UsageError(f"--timeout {timeout:g}: must be positive", hint="seconds, e.g. 900")
    if shutil.which("qemu-system-x86_64") is None:
        raise GuestError("qemu-system-x86_64 is not installed",
                         hint="install qemu-system-x86 (`make setup`)")  # fmt: skip
    if shutil.which("xorriso") is None:
        raise GuestError("xorriso is not installed", hint="install xorriso (`make setup`)")


class _Channel:
    """Reads the second serial port's file as it grows and finds the frame."""

    def __init__(self, path: Path, nonce: str, stream: TextIO | None) -> None:
        self.path = path
        self.begin = f"LIFERAFT-GUEST-BEGIN {nonce}".encode()
        self.end = re.compile(rb"LIFERAFT-GUEST-END " + nonce.encode() + rb" (\d+)")
        self.stream = stream
        self.offset = 0
        self.partial = b""
        self.started = False
        self.pending: str | None = None  # held back: the line before the end marker
        self.lines: list[str] = []
        self.exit_code: int | None = None
        self.error: str | None = None

    def poll(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        self.partial += data
        *complete, self.partial = self.partial.split(b"\n")
        for raw in complete:
            if self.exit_code is not None:
                break
            self._line(raw)

    def _line(self, raw: bytes) -> None:
        if not self.started:
            if raw.startswith(b"LIFERAFT-GUEST-ERROR"):
                self.error = raw.decode("utf-8", "replace").partition(" ")[2]
            self.started = raw.strip() == self.begin
            return
        found = self.end.fullmatch(raw.strip())
        if found:
            self.exit_code = int(found.group(1))
            # The guest writes a newline before the marker: the held line is
            # the script's last, without it.
            if self.pending is not None:
                self._emit(self.pending)
            return
        if self.pending is not None:
            self._emit(self.pending + "\n")
        self.pending = raw.decode("utf-8", "replace")

    def _emit(self, text: str) -> None:
        self.lines.append(text)
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()


def _kept_console(console: Path) -> Path:
    """The console log, moved where it outlives the runner's temporary files."""
    fd, name = tempfile.mkstemp(prefix="liferaft-guest-console-", suffix=".log",
                                dir=_scratch_dir())  # fmt: skip
    os.close(fd)
    shutil.copyfile(console, name)
    return Path(name)


@contextlib.contextmanager
def _keep(console: Path, copy: Path | None) -> Iterator[None]:
    try:
        yield
    finally:
        if copy is not None:
            shutil.copyfile(console, copy)


def _scratch_dir() -> str:
    # The kernel, initrd and medium are tens of MB: not on a small tmpfs /tmp.
    return "/var/tmp" if os.access("/var/tmp", os.W_OK) else tempfile.gettempdir()


@contextlib.contextmanager
def _qemu(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    # QEMU's own messages go to a file: a pipe nobody reads could fill and stall it.
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def run_in_guest(
    iso: Path,
    disks: Sequence[Path],
    script: str | Path,
    *,
    memory_mb: int = 1536,
    timeout: float = 900,
    app: bool = False,
    files: Sequence[Path] = (),
    stream: TextIO | None = None,
    console_log: Path | None = None,
) -> GuestResult:
    """Boot ``iso`` with ``disks`` (/dev/vda, /dev/vdb, ...), run ``script`` as root.

    ``script`` is the script's text, or a Path to read it from. Its output is
    written to ``stream`` as it arrives (whole lines) and returned in the result;
    ``console_log`` keeps the first serial port (kernel, systemd) in that file;
    ``files`` are copied onto the medium's files/ folder.
    Raises UsageError for bad arguments, GuestTimeout after ``timeout`` seconds
    (boot included), GuestError when the guest stops before the script's end.
    """
    iso, disks = Path(iso), [Path(d) for d in disks]
    check_arguments(iso, disks, memory_mb, timeout)
    for f in files:
        if not Path(f).is_file():
            raise UsageError(f"no file at {f}", hint="give files that exist to --file")
    if isinstance(script, Path):
        if not script.is_file():
            raise UsageError(f"no script at {script}", hint="give a shell script to run")
        script = script.read_text()
    nonce = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="liferaft-guest-", dir=_scratch_dir()) as tmp:
        work = Path(tmp)
        kernel = extract_live_kernel(iso, work)
        medium = make_medium(work, script, nonce, app, [Path(f) for f in files])
        console, channel_file = work / "console.log", work / "channel.log"
        console.write_bytes(b"")
        channel_file.write_bytes(b"")
        argv = qemu_argv(iso, kernel, disks, medium, console, channel_file, memory_mb)
        channel = _Channel(channel_file, nonce, stream)
        started = time.monotonic()
        boot_seconds = 0.0
        with _qemu(argv, work / "qemu.log") as proc, _keep(console, console_log):
            while channel.exit_code is None:
                channel.poll()
                if channel.started and not boot_seconds:
                    boot_seconds = time.monotonic() - started
                if channel.exit_code is not None:
                    break
                elapsed = time.monotonic() - started
                stopped = proc.poll() is not None
                if stopped or elapsed > timeout or channel.error:
                    channel.poll()  # what the guest wrote just before it stopped
                    if channel.exit_code is not None:
                        break
                    raise _failure(channel, proc, console, elapsed, timeout, stopped)
                time.sleep(POLL_S)
            seconds = time.monotonic() - started
            try:
                proc.wait(timeout=SHUTDOWN_S)
            except subprocess.TimeoutExpired:
                pass  # killed on the way out; the script's sync already ran
        return GuestResult(channel.exit_code, "".join(channel.lines), boot_seconds, seconds)


@dataclass(frozen=True)
class Scenario:
    """One script of tests/guest/ with its own new sparse disks (MiB each)
    and the checks it must print ("CHECK <name> ok")."""

    script: str
    disks: Sequence[int]
    checks: Sequence[str]


def run_scenarios(
    iso: Path, workdir: Path, scenarios: Sequence[Scenario], **options: object
) -> dict[str, str]:
    """Every scenario in ONE boot (tests/guest/scenarios.sh): each script
    gets its disks as arguments (the first scenario's are vda, vdb, ..., the
    next's follow). Returns each script's output; a script that did not end
    is missing, so ``scenario_output`` names it."""
    here = REPO / "tests" / "guest"
    lines = [(here / "scenarios.sh").read_text()]
    files: list[Path] = []
    letters = iter(string.ascii_lowercase)
    for s in scenarios:
        names = [f"/dev/vd{next(letters)}" for _ in s.disks]
        lines.append(f"scenario {s.script} {' '.join(names)}\n")
        for mib in s.disks:
            files.append(sparse_disk(workdir / f"disk{len(files)}.img", mib << 20))
    result = run_in_guest(iso, files, "".join(lines), app=True, stream=sys.stdout,
                          files=[here / s.script for s in scenarios], **options)  # type: ignore[arg-type]  # fmt: skip
    framed = re.finditer(r"^SCENARIO (\S+) begin\n(.*?)^SCENARIO \1 exit (\d+)$",
                         result.output, re.M | re.S)  # fmt: skip
    return {m.group(1): f"{m.group(2)}EXIT {m.group(3)}\n" for m in framed}


def scenario_output(outputs: dict[str, str], scenario: Scenario) -> str:
    """``scenario``'s output from ``run_scenarios``, asserted: it ended with
    exit 0 and printed each of its checks (the assertion names the script)."""
    out = outputs.get(scenario.script)
    assert out is not None, f"{scenario.script} did not run to its end"
    assert out.endswith("EXIT 0\n"), f"{scenario.script} failed:\n{out[-3000:]}"
    for name in scenario.checks:
        assert f"CHECK {name} ok" in out, f"{scenario.script}: CHECK {name}"
    return out


def _failure(
    channel: _Channel, proc: subprocess.Popen[bytes], console: Path,
    elapsed: float, timeout: float, stopped: bool,
) -> GuestError:  # fmt: skip
    where = "while the script ran" if channel.started else "before the script started"
    kept = _kept_console(console)
    hint = f"serial console in {kept}"
    if channel.error:
        return GuestError(channel.error, hint=hint)
    if not stopped:
        return GuestTimeout(f"timed out after {timeout:g} s {where}", hint=hint)
    qemu_said = ""
    if not channel.started:
        lines = (console.parent / "qemu.log").read_text("utf-8", "replace").strip().splitlines()
        qemu_said = f": {lines[-1]}" if lines else ""
    return GuestError(
        f"QEMU stopped (exit {proc.returncode}) after {elapsed:.0f} s {where}{qemu_said}",
        hint=hint,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.helpers.guest",
        description="Boot the rescue ISO under QEMU with disks attached (/dev/vda, /dev/vdb, "
        "... in order) and run a shell script in it as root; exits with its exit code.",
    )
    parser.add_argument("--iso", type=Path, default=REPO / "dist" / "liferaft-default.iso")
    parser.add_argument("--disk", type=Path, action="append", default=[],
                        help="a disk image; repeat for more (vda, vdb, ...)")  # fmt: skip
    parser.add_argument("--memory", type=int, default=1536, help="MiB (default 1536)")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds for boot and script together (default 900)")  # fmt: skip
    parser.add_argument("--app", action="store_true",
                        help="run this tree's rescue_app/ (first on PYTHONPATH)")  # fmt: skip
    parser.add_argument("--file", type=Path, action="append", default=[],
                        help="a file for the medium's files/ folder; repeat for more")  # fmt: skip
    parser.add_argument("--console", type=Path, metavar="FILE",
                        help="keep the serial console (kernel, systemd) in FILE")  # fmt: skip
    parser.add_argument("script", type=Path, help="shell script to run as root in the guest")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed its one line of usage error
        return 2 if exc.code else 0
    try:
        result = run_in_guest(args.iso, args.disk, args.script, memory_mb=args.memory,
                              timeout=args.timeout, app=args.app, files=args.file,
                              stream=sys.stdout, console_log=args.console)  # fmt: skip
    except LiferaftError as exc:
        print(f"guest: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # e.g. --console in a directory that does not exist
        print(f"guest: {exc}", file=sys.stderr)
        return EXIT_GUEST_FAILED
    except KeyboardInterrupt:
        print("guest: interrupted; the VM is stopped", file=sys.stderr)
        return 130
    print(f"guest: script exit {result.exit_code}; script started {result.boot_seconds:.1f} s "
          f"after QEMU, ended at {result.seconds:.1f} s", file=sys.stderr)  # fmt: skip
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
