"""Rules: rule packs that turn scores into maintenance recommendations."""
