#!/usr/bin/env bash
# Card bridge CI setup (idempotent). The PC/SC tests start their own pcscd with a private vpcd reader
# configuration and stop it afterwards; pcscd is one per machine, so a system pcscd (or systemd's socket
# activation of it, which installing the package may enable) is stopped here when the PC/SC tests are
# required (GATEHOUSE_REQUIRE_PCSC=1, set by .ci/run). Then this checks that the pieces the tests need are
# in place and says so, so a PC/SC test failure is easy to explain from the CI log.
set -euo pipefail
ok=1
for f in /usr/sbin/pcscd /usr/lib/pcsc/drivers/serial/libifdvpcd.so /usr/include/PCSC/winscard.h; do
  if [ ! -e "$f" ]; then echo "card-bridge setup: missing $f (see .ci/packages-card-bridge.txt)"; ok=0; fi
done
if [ "${GATEHOUSE_REQUIRE_PCSC:-}" = 1 ] && command -v systemctl >/dev/null 2>&1; then
  systemctl stop pcscd.socket pcscd.service >/dev/null 2>&1 || true
fi
if [ -S /run/pcscd/pcscd.comm ] && [ -n "$(pgrep -x pcscd || true)" ]; then
  echo "card-bridge setup: note: a pcscd is already running; the PC/SC tests need their own and will fail or skip"
fi
[ "$ok" = 1 ] && echo "card-bridge setup: pcscd, the vpcd driver and the PC/SC headers are installed"
exit 0
