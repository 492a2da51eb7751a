"""The simulated wire's stanzas: small immutable XML elements, shaped like Prosody's util.stanza.

A real transport reads XML off a socket into its library's element objects; the simulation skips
the bytes and passes :class:`Element` values around instead. They are frozen, compare by value,
and print as the XML they stand for, which is what the transcripts and `python -m
client_proxy.sim` show. A namespace is an ordinary ``xmlns`` attribute, as in Prosody.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DELAY_NS",
    "SIM_NS",
    "STANZAS_NS",
    "Element",
    "error_element",
    "error_reply",
    "iq",
    "presence",
]

#: RFC 6120 §8.3.3: the namespace of the defined stanza error conditions.
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
#: XEP-0203: the timestamp Prosody adds to presence it answers a probe with.
DELAY_NS = "urn:xmpp:delay"
#: The payloads the simulation's scripted users and target resources exchange.
SIM_NS = "urn:client-proxy:sim"


@dataclass(frozen=True, slots=True)
class Element:
    """One XML element: its name, its attributes in document order, its children in order."""

    name: str
    attrs: tuple[tuple[str, str], ...] = ()
    children: tuple[Element | str, ...] = ()

    def get(self, attr: str) -> str | None:
        """The value of attribute ``attr``, or None if absent."""
        for key, value in self.attrs:
            if key == attr:
                return value
        return None

    def with_attr(self, attr: str, value: str | None) -> Element:
        """A copy with ``attr`` set to ``value`` (in place if present, else appended) or removed
        (``value`` None)."""
        attrs: list[tuple[str, str]] = []
        done = False
        for key, old in self.attrs:
            if key == attr:
                done = True
                if value is not None:
                    attrs.append((key, value))
            else:
                attrs.append((key, old))
        if not done and value is not None:
            attrs.append((attr, value))
        return Element(self.name, tuple(attrs), self.children)

    def with_child(self, child: Element | str) -> Element:
        return Element(self.name, self.attrs, (*self.children, child))

    @property
    def elements(self) -> tuple[Element, ...]:
        """The child elements, without the text between them."""
        return tuple(c for c in self.children if isinstance(c, Element))

    def child(self, name: str, xmlns: str | None = None) -> Element | None:
        """The first child element called ``name`` (and in ``xmlns``, if given)."""
        for c in self.elements:
            if c.name == name and (xmlns is None or c.get("xmlns") == xmlns):
                return c
        return None

    def text(self) -> str:
        """The element's own text (not its descendants')."""
        return "".join(c for c in self.children if isinstance(c, str))

    def top_tag(self) -> str:
        """The opening tag alone, as Prosody's ``stanza:top_tag()`` logs it."""
        return f"<{self.name}{self._attrs()}>"

    def __str__(self) -> str:
        if not self.children:
            return f"<{self.name}{self._attrs()}/>"
        inner = "".join(_escape(c) if isinstance(c, str) else str(c) for c in self.children)
        return f"<{self.name}{self._attrs()}>{inner}</{self.name}>"

    def _attrs(self) -> str:
        return "".join(f" {k}='{_escape(v)}'" for k, v in self.attrs)


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("'", "&apos;")
        .replace('"', "&quot;")
    )


def _stanza(
    name: str,
    type: str | None,
    id: str | None,
    *,
    to: str | None,
    from_: str | None,
    children: tuple[Element | str, ...],
) -> Element:
    # The attribute order of DESIGN.md's examples: type, id, to, from.
    attrs = tuple(
        (k, v)
        for k, v in (("type", type), ("id", id), ("to", to), ("from", from_))
        if v is not None
    )
    return Element(name, attrs, children)


def iq(
    type: str,
    id: str,
    *,
    to: str | None = None,
    from_: str | None = None,
    children: tuple[Element | str, ...] = (),
) -> Element:
    """An `<iq/>` (RFC 6120 §8.2.3: type and id are required)."""
    return _stanza("iq", type, id, to=to, from_=from_, children=children)


def presence(
    type: str | None = None,
    *,
    to: str | None = None,
    from_: str | None = None,
    children: tuple[Element | str, ...] = (),
) -> Element:
    """A `<presence/>` (RFC 6121 §4.7.1: no type means available)."""
    return _stanza("presence", type, None, to=to, from_=from_, children=children)


def error_element(
    type: str,
    condition: str,
    text: str | None = None,
    by: str | None = None,
    extra: tuple[Element, ...] = (),
) -> Element:
    """An `<error/>` child (RFC 6120 §8.3.2): its type, defined condition, optional text and
    ``by``, then any ``extra`` children (application-specific conditions)."""
    children: tuple[Element | str, ...] = (Element(condition, (("xmlns", STANZAS_NS),)),)
    if text is not None:
        children = (*children, Element("text", (("xmlns", STANZAS_NS),), (text,)))
    attrs = (("type", type),) if by is None else (("type", type), ("by", by))
    return Element("error", attrs, (*children, *extra))


def error_reply(
    stanza: Element,
    type: str,
    condition: str,
    text: str | None = None,
    *,
    by: str | None = None,
    extra: tuple[Element, ...] = (),
    echo: bool = False,
) -> Element:
    """The error answer to ``stanza`` (RFC 6120 §8.3.1): same name and id, `to` and `from`
    swapped, type error. Prosody's ``st.error_reply`` echoes no payload; with ``echo`` the
    stanza's children come back before the `<error/>`, as ejabberd sends them (the order is
    RFC 6120's examples'; ejabberd's was not recorded)."""
    error = error_element(type, condition, text, by, extra)
    return _stanza(
        stanza.name,
        "error",
        stanza.get("id"),
        to=stanza.get("from"),
        from_=stanza.get("to"),
        children=(*stanza.children, error) if echo else (error,),
    )
