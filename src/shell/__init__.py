"""client-proxy's imperative shell: the slixmpp component connection, config, CLI and timers."""
