"""The agent's exception hierarchy: each error carries the facts a person needs to act."""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """A setting or a configuration file is wrong; the message names it."""


class ConnectorError(EdgeAgentError):
    """A connector could not reach, or talk to, the outside world."""


class PublishRefusedError(ConnectorError):
    """The broker refused a publish (MQTT 5 reason code >= 0x80): the message is at fault."""


class DataError(EdgeAgentError):
    """Data given to fit a model cannot make one; the message names file, line and column."""


class ModelError(EdgeAgentError):
    """A model file, its manifest or a backend is unusable."""


class RuleError(EdgeAgentError):
    """A rule pack is invalid or could not be evaluated."""


class BundleError(EdgeAgentError):
    """A bundle failed verification, staging or probation."""


class OutboxError(EdgeAgentError):
    """The outbox could not store or deliver a message."""
