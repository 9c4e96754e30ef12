# %postun of audisp: systemd forgets removed units; after an upgrade,
# running services restart on the new programs. packaging/build.sh fills in
# the list of services from units/.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
if [ "$1" -ge 1 ] && [ -d /run/systemd/system ]; then
    systemctl try-restart @SERVICES@ || :
fi
