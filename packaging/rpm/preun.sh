# %preun of audisp: erasing the package stops and disables every unit.
# packaging/build.sh fills in the list of units from units/.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now @UNITS@ || :
fi
