"""Service files shipped with the agent (data only): the systemd unit, read by install-service."""
