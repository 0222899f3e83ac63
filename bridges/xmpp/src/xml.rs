//! Just enough XML for an XMPP stream: stanzas as small element trees, read one at a time from
//! the stream (with a size bound), and written back with escaping.
//!
//! Namespaces are kept as the `xmlns` attribute an element declares; XMPP payloads declare
//! their namespace on the element itself (`<replace xmlns='urn:xmpp:message-correct:0'/>`),
//! which is what [`Element::child`] matches on.

use std::fmt::Write as _;

use quick_xml::{Reader, events::Event};
use tokio::io::AsyncBufRead;

/// An XML element: name (without prefix), attributes, children and text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    /// Local name, e.g. `message`.
    pub name: String,
    /// Attributes in document order (`xmlns` included), names as written.
    pub attrs: Vec<(String, String)>,
    /// Child elements.
    pub children: Vec<Element>,
    /// The element's own text (text nodes between children, concatenated).
    pub text: String,
}

impl Element {
    /// An element with no attributes.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// Adds an attribute (builder style).
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attrs.push((name.to_owned(), value.into()));
        self
    }

    /// Adds a child (builder style).
    pub fn with(mut self, child: Element) -> Self {
        self.children.push(child);
        self
    }

    /// Sets the text (builder style).
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = text.into();
        self
    }

    /// An attribute's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The namespace this element declares.
    pub fn ns(&self) -> Option<&str> {
        self.get("xmlns")
    }

    /// The first child with this name and (if given) this declared namespace.
    pub fn child(&self, name: &str, ns: Option<&str>) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.name == name && (ns.is_none() || c.ns() == ns))
    }

    /// The text of the first child with this name, if any.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name, None).map(|c| c.text.as_str())
    }

    /// The element as XML.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        let _ = write!(out, "<{}", self.name);
        for (n, v) in &self.attrs {
            let _ = write!(out, " {n}='{}'", escape(v));
        }
        if self.children.is_empty() && self.text.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        out.push_str(&escape(&self.text));
        for c in &self.children {
            c.write(out);
        }
        let _ = write!(out, "</{}>", self.name);
    }
}

/// Escapes text or an attribute value (either quote style).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            // Characters XML 1.0 cannot carry at all are dropped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// What the stream yields.
#[derive(Debug)]
pub enum Item {
    /// The stream's opening tag (`<stream:stream …>`), with its attributes.
    StreamStart(Element),
    /// One complete top-level element (a stanza, `<handshake/>`, `<stream:error>`, …).
    Stanza(Element),
    /// The stream was closed (`</stream:stream>` or end of input).
    End,
}

/// Why reading the stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not well-formed XML.
    #[error("XML: {0}")]
    Xml(#[from] quick_xml::Error),
    /// A stanza larger than the bound, or nested deeper than it.
    #[error("stanza over the limit ({0})")]
    TooLarge(&'static str),
}

/// Deepest nesting taken inside one stanza.
const MAX_DEPTH: usize = 32;

/// Reads an XMPP stream one top-level element at a time.
pub struct StreamReader<R> {
    reader: Reader<R>,
    buf: Vec<u8>,
    max_stanza: usize,
}

fn local(name: &str) -> String {
    match name.rsplit_once(':') {
        Some((_, l)) => l.to_owned(),
        None => name.to_owned(),
    }
}

fn element(start: &quick_xml::events::BytesStart<'_>) -> Result<Element, quick_xml::Error> {
    let mut el = Element::new(&local(start.name().as_ref()));
    for a in start.attributes() {
        let a = a.map_err(quick_xml::Error::from)?;
        let name = a.key.as_ref().to_owned();
        let value = a.normalized_value(quick_xml::XmlVersion::Implicit1_0)?;
        el.attrs.push((name, value.into_owned()));
    }
    Ok(el)
}

impl<R: AsyncBufRead + Unpin> StreamReader<R> {
    /// A reader over `input` that refuses stanzas over `max_stanza` bytes.
    pub fn new(input: R, max_stanza: usize) -> Self {
        let mut reader = Reader::from_reader(input);
        reader.config_mut().check_end_names = true;
        Self {
            reader,
            buf: Vec::new(),
            max_stanza,
        }
    }

    /// The next item of the stream.
    pub async fn next(&mut self) -> Result<Item, ReadError> {
        // Open elements of the stanza being read; empty between stanzas.
        let mut stack: Vec<Element> = Vec::new();
        let start = self.reader.buffer_position();
        loop {
            self.buf.clear();
            let event = self.reader.read_event_into_async(&mut self.buf).await?;
            if self.reader.buffer_position() - start > self.max_stanza as u64 {
                return Err(ReadError::TooLarge("size"));
            }
            match event {
                Event::Start(s) => {
                    let el = element(&s)?;
                    if stack.is_empty() && el.name == "stream" {
                        return Ok(Item::StreamStart(el));
                    }
                    if stack.len() >= MAX_DEPTH {
                        return Err(ReadError::TooLarge("depth"));
                    }
                    stack.push(el);
                }
                Event::Empty(s) => {
                    let el = element(&s)?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => return Ok(Item::Stanza(el)),
                    }
                }
                Event::End(_) => match stack.pop() {
                    Some(el) => match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => return Ok(Item::Stanza(el)),
                    },
                    // The end of `<stream:stream>`.
                    None => return Ok(Item::End),
                },
                Event::Text(t) => {
                    if let Some(el) = stack.last_mut() {
                        el.text.push_str(&t.xml_content(Default::default()));
                    }
                }
                Event::CData(t) => {
                    if let Some(el) = stack.last_mut() {
                        el.text.push_str(&t.into_inner());
                    }
                }
                Event::GeneralRef(r) => {
                    if let Some(el) = stack.last_mut() {
                        let c = match r.resolve_char_ref()? {
                            Some(c) => Some(c),
                            None => match r.as_ref() {
                                "amp" => Some('&'),
                                "lt" => Some('<'),
                                "gt" => Some('>'),
                                "quot" => Some('"'),
                                "apos" => Some('\''),
                                _ => None,
                            },
                        };
                        el.text.extend(c);
                    }
                }
                Event::Eof => return Ok(Item::End),
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_stanzas_with_entities_and_writes_them_back() {
        let input = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
                     xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='b.l'>\
                     <handshake/><message from='r@c/n&amp;m' type='groupchat'>\
                     <body>a &lt;b&gt; &#x263A; &amp; c</body>\
                     <replace xmlns='urn:xmpp:message-correct:0' id='x1'/></message>\
                     </stream:stream>";
        let mut r = StreamReader::new(input.as_bytes(), 10_000);
        let Item::StreamStart(s) = r.next().await.unwrap() else {
            panic!()
        };
        assert_eq!(s.get("id"), Some("abc"));
        let Item::Stanza(h) = r.next().await.unwrap() else {
            panic!()
        };
        assert_eq!(h.name, "handshake");
        let Item::Stanza(m) = r.next().await.unwrap() else {
            panic!()
        };
        assert_eq!(m.get("from"), Some("r@c/n&m"));
        assert_eq!(m.child_text("body"), Some("a <b> ☺ & c"));
        let rep = m
            .child("replace", Some("urn:xmpp:message-correct:0"))
            .unwrap();
        assert_eq!(rep.get("id"), Some("x1"));
        assert!(matches!(r.next().await.unwrap(), Item::End));

        let back = m.to_xml();
        let mut r2 = StreamReader::new(back.as_bytes(), 10_000);
        let Item::Stanza(again) = r2.next().await.unwrap() else {
            panic!()
        };
        assert_eq!(again, m);
    }

    #[tokio::test]
    async fn refuses_oversized_and_deep_stanzas() {
        let big = format!("<message><body>{}</body></message>", "x".repeat(5000));
        let mut r = StreamReader::new(big.as_bytes(), 1000);
        assert!(matches!(r.next().await, Err(ReadError::TooLarge(_))));
        let deep = "<a>".repeat(100);
        let mut r = StreamReader::new(deep.as_bytes(), 100_000);
        assert!(matches!(r.next().await, Err(ReadError::TooLarge(_))));
    }
}
