"""Every key of the text UI in one table: what the app and each screen bind.

One place to see which keys a screen takes (a key bound twice on one screen
would hide the second; tests/tui/test_logic.py checks), to keep the footer
texts alike, and to tell the docs what to list. The actions stay with their
screens (``action_<name>``)."""

from __future__ import annotations

from textual.binding import Binding, BindingType

BACK = Binding("escape", "app.pop_screen", "Back")
CANCEL = Binding("escape", "cancel", "Cancel")
REFRESH = Binding("r", "reload", "Refresh")

APP: list[BindingType] = [
    Binding("l", "show_log", "Log"),
    Binding("ctrl+l", "show_log", "Log", show=False, priority=True),
    Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
]
HOME: list[BindingType] = [
    Binding("r", "restore", "Restore"),
    Binding("b", "backup", "Back up"),
    Binding("v", "verify", "Verify"),
    Binding("n", "network", "Network"),
    Binding("d", "disks", "Disks"),
    Binding("s", "shell", "Shell"),
    Binding("p", "power", "Power"),
    Binding("f5", "rescan", "Rescan", show=False),
    Binding("q", "quit_app", "Quit"),
]

# -- restore and verify: where the images are, which image, onto which disks
SOURCE: list[BindingType] = [
    BACK,
    Binding("f5", "rescan", "Rescan"),
    Binding("ctrl+t", "focus_path", "Type a path"),
    Binding("ctrl+n", "network", "Network / URL"),
]
NETWORK: list[BindingType] = [
    BACK,
    Binding("f2", "dhcp", "DHCP"),
    Binding("f3", "static", "Fixed address"),
    Binding("f5", "refresh", "Refresh"),
    Binding("ctrl+o", "open", "Open", priority=True),
]
INTERFACE_SETUP: list[BindingType] = [
    CANCEL,
    Binding("ctrl+o", "apply", "Apply", priority=True),
]
PASSWORD: list[BindingType] = [CANCEL]
IMAGES: list[BindingType] = [
    BACK,
    Binding("enter", "choose", "Choose", show=True),
    Binding("f", "browse", "Browse files"),
]
TARGET: list[BindingType] = [BACK, Binding("ctrl+n", "next", "Erase and restore...")]
CONFIRM_ERASE: list[BindingType] = [CANCEL]

# -- an image's files (the mount is released on the way out: not a plain Back)
BROWSE: list[BindingType] = [
    Binding("escape", "leave", "Back"),
    Binding("backspace", "up", "Up"),
    Binding("space", "mark", "Mark"),
    Binding("c", "copy", "Copy marked"),
]
COPY_TO: list[BindingType] = [CANCEL]

# -- back up, and the job's progress
BACKUP: list[BindingType] = [BACK, Binding("ctrl+n", "start", "Start backup")]
PROGRESS: list[BindingType] = [
    Binding("escape,c", "cancel_job", "Cancel"),
    Binding("enter,h", "home", "Home"),
]

# -- views and questions
DISKS: list[BindingType] = [Binding("escape,q", "app.pop_screen", "Back"), REFRESH]
LOG: list[BindingType] = [Binding("escape,q,l", "app.pop_screen", "Back"), REFRESH]
ERROR: list[BindingType] = [
    Binding("escape,enter", "dismiss_error", "Close"),
    Binding("l", "app.show_log", "Log"),
]
QUESTION: list[BindingType] = [
    Binding("escape,n", "answer(False)", "No"),
    Binding("y", "answer(True)", "Yes"),
]
POWER: list[BindingType] = [Binding("escape", "dismiss_modal", "Cancel")]
