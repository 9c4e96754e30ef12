# %pre of audisp: the audisp group exists before the files are installed,
# as the sysusers rpm macros do it (dbus-daemon rereads its policy as soon
# as a file appears, and ignores a group that does not exist yet).
# packaging/build.sh fills in the lines of packaging/audisp.sysusers.
if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers --replace=/usr/lib/sysusers.d/audisp.conf - <<'SYSUSERS' || :
@SYSUSERS@
SYSUSERS
fi
