"""Running as a service.

Owns systemd notify and watchdog (notify.py), metrics and health over HTTP (http.py),
event-loop pressure and degraded mode (pressure.py), and installing the unit and env file
on a gateway (install.py).

May import: core, and the daemon's settings sections.
"""
