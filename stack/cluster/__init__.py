"""The local one-node Kubernetes: built from the Go module proxy and Debian, run as parts.

``build`` makes the binaries and images (cached in ``stack/cache/k8s``), ``pki`` the
certificates, ``host`` sets up and undoes what the cluster needs on this machine (an address on
lo, sysctls, iptables), ``parts`` are its processes for the launcher. README.md, "The local
cluster", says what it sets up, how it is used and what ``down`` restores.
"""
