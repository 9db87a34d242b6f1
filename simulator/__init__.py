"""The plant simulator: pumps and motors with injected faults."""
