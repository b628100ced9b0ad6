"""OCI images of every part, built without a container engine (``make images``).

A Debian bookworm root file system from ``debootstrap`` and ``apt-get`` in a chroot, the Python
dependencies copied from the virtualenv ``make setup`` installed, the project itself and the
artifacts of the stack cache, each packed as a gzip'd tar layer; an image is a list of layers
and a config, written as one OCI archive. See ``catalogue.py`` for the images and ``build.py``
for the steps."""
