# Autologin shells on tty1 and ttyS0 start the rescue app; others get a shell.
case "$(tty)" in
    /dev/tty1|/dev/ttyS0)
        if [ -z "${LIFERAFT_STARTED:-}" ]; then
            export LIFERAFT_STARTED=1
            /usr/local/sbin/liferaft-start
        fi
        ;;
esac
[ -f ~/.bashrc ] && . ~/.bashrc
