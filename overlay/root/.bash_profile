# tty1 and ttyS0 start the rescue app without a login (liferaft-start, run by
# agetty); its shell afterwards, and every other login, is a plain root shell.
[ -f ~/.bashrc ] && . ~/.bashrc
