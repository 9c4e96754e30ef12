# %post of audisp: what the sysusers, tmpfiles and systemd rpm macros do,
# with systemd's presets (80-audisp.preset) deciding what is enabled on
# first install, and a reload of the bus so it reads the D-Bus policy.
# packaging/build.sh fills in the lists of units and services from units/.
systemd-sysusers audisp.conf || :
systemd-tmpfiles --create audisp.conf || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset @UNITS@ || :
fi
if systemctl -q is-active dbus.service 2>/dev/null; then
    systemctl reload dbus.service || :
fi
