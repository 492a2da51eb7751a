"""A conformance kit for client-proxy transports: Hypothesis strategies for JIDs and stanzas, and
the properties every transport of the core must keep. Needs the `hypothesis` package."""
