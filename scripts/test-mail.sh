#!/usr/bin/env bash
# Starts (or stops) a throwaway Dovecot IMAP server on 127.0.0.1:1143 for
# the email tests, and prints the TEST_IMAP_URL to use. Any user name logs
# in with the password `secret` and gets its own Maildir, so each test uses
# a mailbox of its own. The tests start their own SMTP server (Python's
# aiosmtpd, `pip install aiosmtpd`) so each can read what it received and
# stop it at will.
#
#   scripts/test-mail.sh start   # then: export TEST_IMAP_URL=...
#   scripts/test-mail.sh stop
#
# Needs `dovecot-imapd` (Debian). Dovecot runs its mail processes as the
# `mail` user: as root, the mail directory belongs to that user.
set -euo pipefail

DIR=${TEST_MAIL_DIR:-/tmp/gateway-test-mail}
PORT=${TEST_IMAP_PORT:-1143}
URL="imap://127.0.0.1:${PORT}"

case "${1:-start}" in
  start)
    command -v dovecot >/dev/null || { echo "dovecot not found (apt-get install dovecot-imapd)" >&2; exit 1; }
    if [ -f "$DIR/dovecot.conf" ] && doveadm -c "$DIR/dovecot.conf" stop >/dev/null 2>&1; then
      sleep 0.5
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR/run" "$DIR/state" "$DIR/mail"
    if [ "$(id -u)" = 0 ]; then
      chown -R mail:mail "$DIR/mail"
      USERDB="uid=mail gid=mail home=$DIR/mail/%u"
    else
      USERDB="uid=$(id -u) gid=$(id -g) home=$DIR/mail/%u"
    fi
    cat > "$DIR/dovecot.conf" <<CONF
base_dir = $DIR/run
state_dir = $DIR/state
log_path = $DIR/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:$DIR/mail/%u/Maildir
first_valid_uid = 8
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $PORT
  }
  inet_listener imaps {
    port = 0
  }
}
passdb {
  driver = static
  args = password=secret
}
userdb {
  driver = static
  args = $USERDB
}
CONF
    dovecot -c "$DIR/dovecot.conf"
    for _ in $(seq 50); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then echo "$URL"; exit 0; fi
      sleep 0.1
    done
    echo "dovecot did not start; see $DIR/dovecot.log" >&2; exit 1
    ;;
  stop)
    [ -f "$DIR/dovecot.conf" ] && doveadm -c "$DIR/dovecot.conf" stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 start|stop" >&2; exit 2
    ;;
esac
