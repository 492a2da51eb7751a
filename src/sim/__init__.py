"""A second transport for the core: a deterministic, in-memory simulation of an XMPP deployment."""
