#!/usr/bin/env bash
# Installs what the tests need and Python packages cannot bring (PostgreSQL; Chromium for the
# dashboard's browser test, driven by Playwright without its own browser download; the telephony
# side: rtpengine as the media engine, espeak-ng and sox to build the IVR prompts offline, SIPp
# and baresip as independent SIP clients for the tests, Kamailio as the province's SIP entry),
# from Debian's packages, when they are missing. Idempotent and quick when everything is there.
set -euo pipefail

need=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
# certutil: the browser tests give headless Chromium the province CA in its own NSS database
# (tools/province/chromium.py), as an operator installs it, instead of ignoring certificate errors.
command -v certutil >/dev/null 2>&1 || need+=(libnss3-tools)
# A small CJK font, so the dashboard's Chinese screenshots are legible in headless Chromium.
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
# Telephony: the media engine (userspace), prompts built from text, SIP test clients.
command -v rtpengine >/dev/null 2>&1 || need+=(rtpengine-daemon)
command -v rtpengine-ctl >/dev/null 2>&1 || need+=(rtpengine-utils)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need+=(sox)
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
# The province's SIP entry (deploy/kamailio/): the carrier's number dispatched to the cities.
command -v kamailio >/dev/null 2>&1 || need+=(kamailio)
# The mixing bridge of supervision (whisper, barge-in) and conferences (site_node/media/bridge.py):
# GStreamer's live audiomixer as a supervised process (rtpengine 10.5 forks media but cannot mix).
command -v gst-launch-1.0 >/dev/null 2>&1 || need+=(gstreamer1.0-tools)
[ -e /usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstaudiomixer.so ] || need+=(gstreamer1.0-plugins-base)
[ -e /usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstrtp.so ] || need+=(gstreamer1.0-plugins-good)
# The bridge's live mixer (site_node/media/mixer_host.py) runs on the system's Python with PyGObject.
[ -e /usr/lib/python3/dist-packages/gi/__init__.py ] || need+=(python3-gi)
[ -e /usr/lib/x86_64-linux-gnu/girepository-1.0/Gst-1.0.typelib ] || need+=(gir1.2-gstreamer-1.0)

# promtool, for the alert rules' own tests (tests/ops/test_deploy.py): taken out of Debian's
# prometheus package without installing it (installing would start a Prometheus server).
# Best effort: without it that test is skipped and the rules are checked structurally.
want_promtool=0
command -v promtool >/dev/null 2>&1 || want_promtool=1

install_promtool() {
  local tmp
  tmp=$(mktemp -d)
  if (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1 && dpkg-deb -x prometheus_*.deb x); then
    install -m 0755 "$tmp/x/usr/bin/promtool" /usr/local/bin/promtool
  else
    echo "promtool not installed (Debian's prometheus package could not be fetched)" >&2
  fi
  rm -rf "$tmp"
}

if [ ${#need[@]} -eq 0 ] && [ "$want_promtool" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] && [ ${#need[@]} -eq 0 ]; then
  exit 0  # promtool is optional
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]} (run: sudo apt-get install -y ${need[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
elif [ "$want_promtool" -eq 1 ]; then
  apt-get update -qq >/dev/null 2>&1 || true  # optional: never fails the tests' setup
fi
if [ "$want_promtool" -eq 1 ]; then
  install_promtool
fi
