"""The daemon: settings, frames, gate, outbox, supervision and the command line."""
