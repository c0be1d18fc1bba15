#!/usr/bin/env bash
# Card bridge CI setup (idempotent). The PC/SC tests start their own pcscd with a private vpcd reader
# configuration and stop it afterwards, so nothing is started here; this only checks that the pieces the
# tests need are in place and says so, so a skipped PC/SC test is easy to explain from the CI log.
set -euo pipefail
ok=1
for f in /usr/sbin/pcscd /usr/lib/pcsc/drivers/serial/libifdvpcd.so; do
  if [ ! -e "$f" ]; then echo "card-bridge setup: missing $f (see .ci/packages-card-bridge.txt)"; ok=0; fi
done
if [ -S /run/pcscd/pcscd.comm ]; then
  echo "card-bridge setup: note: a pcscd is already running; the PC/SC tests need their own and will skip"
fi
[ "$ok" = 1 ] && echo "card-bridge setup: pcscd and the vpcd driver are installed"
exit 0
