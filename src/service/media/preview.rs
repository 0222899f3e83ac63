//! URL previews: fetching a page a user names, safely, and reading its OpenGraph tags.
//!
//! A URL a user names is a request the server makes on their behalf, so the fetch refuses what
//! the server can reach but the user should not: private, loopback, link-local, unspecified,
//! multicast and other special addresses (SSRF). Every address is checked after DNS resolution,
//! by the client's own resolver at connection time (so a name cannot resolve to a public
//! address for the check and a private one for the connection), and every hop of at most
//! [`MAX_REDIRECTS`] redirects is checked again. Bodies are read up to a cap, the whole fetch
//! has a deadline, and no proxy from the environment is used.

use std::{net::IpAddr, sync::Arc, time::Duration};

use reqwest::Url;

use crate::service::net::{AddressError, CheckedResolver, allowed_addresses, is_refused};

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 3;
/// Bytes of a page read at most (the tags are in its head).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// How long one preview may take, its image included.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Why a preview failed.
#[derive(Debug)]
pub enum PreviewError {
    /// Not an http(s) URL.
    BadUrl(String),
    /// The URL leads to an address the server does not fetch from.
    Refused(String),
    /// The page could not be fetched.
    Failed(String),
}

impl From<AddressError> for PreviewError {
    fn from(e: AddressError) -> Self {
        match e {
            AddressError::Unresolvable(m) => PreviewError::Failed(m),
            AddressError::Refused(m) => PreviewError::Refused(m),
        }
    }
}

impl std::fmt::Display for PreviewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PreviewError::BadUrl(m) | PreviewError::Refused(m) | PreviewError::Failed(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for PreviewError {}

/// A fetched resource.
pub struct Fetched {
    /// Where it came from, after redirects.
    pub url: Url,
    /// Its `Content-Type`, lowercased, without parameters.
    pub content_type: String,
    pub body: Vec<u8>,
    /// Whether the body was longer than the cap and cut.
    pub truncated: bool,
}

/// The preview fetcher: its own HTTP client (no automatic redirects, no proxy, the checked
/// resolver).
pub struct Previewer {
    client: reqwest::Client,
    allow_loopback: bool,
}

impl Previewer {
    pub fn new(allow_loopback: bool) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver { allow_loopback }))
            .connect_timeout(Duration::from_secs(5))
            .timeout(DEADLINE)
            .user_agent(concat!(
                "Tsunagu/",
                env!("CARGO_PKG_VERSION"),
                " (URL preview)"
            ))
            .build()?;
        Ok(Self {
            client,
            allow_loopback,
        })
    }

    /// Parses a URL a user gave and checks its scheme.
    pub fn parse(url: &str) -> Result<Url, PreviewError> {
        let url = Url::parse(url).map_err(|e| PreviewError::BadUrl(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(PreviewError::BadUrl(
                "only http and https URLs are previewed".into(),
            ));
        }
        Ok(url)
    }

    /// Refuses a URL whose host is, or resolves only to, refused addresses.
    async fn check(&self, url: &Url) -> Result<(), PreviewError> {
        let host = url
            .host_str()
            .ok_or_else(|| PreviewError::BadUrl("no host".into()))?;
        // URL parsing writes every IPv4 form (`0x7f.1`, `2130706433`) as dotted decimal and
        // IPv6 in brackets.
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => self.check_ip(ip),
            Err(_) => allowed_addresses(host, self.allow_loopback)
                .await
                .map(|_| ())
                .map_err(PreviewError::from),
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), PreviewError> {
        if is_refused(ip, self.allow_loopback) {
            return Err(PreviewError::Refused(format!(
                "{ip} is not an address the server fetches from"
            )));
        }
        Ok(())
    }

    /// GETs `url`, following at most [`MAX_REDIRECTS`] redirects (each checked like the first
    /// URL), and reads at most `max_bytes(content type)` bytes of the body.
    pub async fn fetch(
        &self,
        url: Url,
        max_bytes: impl Fn(&str) -> usize,
    ) -> Result<Fetched, PreviewError> {
        let failed = |e: reqwest::Error| PreviewError::Failed(e.without_url().to_string());
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(PreviewError::Refused("redirect to a non-http URL".into()));
            }
            self.check(&url).await?;
            let mut res = self.client.get(url.clone()).send().await.map_err(failed)?;
            if res.status().is_redirection() {
                let next = res
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| PreviewError::Failed("redirect without a location".into()))?;
                url = next;
                continue;
            }
            if !res.status().is_success() {
                return Err(PreviewError::Failed(format!(
                    "the page answered {}",
                    res.status()
                )));
            }
            let content_type = res
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(essence)
                .unwrap_or_default();
            let max_bytes = max_bytes(&content_type);
            let mut body = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = res.chunk().await.map_err(failed)? {
                let room = max_bytes - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(Fetched {
                url,
                content_type,
                body,
                truncated,
            });
        }
        Err(PreviewError::Failed(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

/// A content type's essence: `text/html; charset=utf-8` -> `text/html`.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The OpenGraph tags of a page (`og:*` from `<meta property|name=… content=…>`), with the
/// `<title>` and `<meta name="description">` standing in for a missing `og:title` and
/// `og:description`. A plain scan of the head, not an HTML parser: it reads the tags every
/// site writes the same way and ignores everything else.
pub fn open_graph(html: &str) -> Vec<(String, String)> {
    let lower = html.to_ascii_lowercase();
    // Only the head: the body can be long and its text is not about the page.
    let end = lower.find("</head").unwrap_or(lower.len());
    let (head, lower_head) = (&html[..end], &lower[..end]);
    let mut tags: Vec<(String, String)> = Vec::new();
    let mut description = None;
    let mut at = 0;
    while let Some(found) = lower_head[at..].find("<meta") {
        let start = at + found + "<meta".len();
        let close = lower_head[start..]
            .find('>')
            .map_or(head.len(), |i| start + i);
        let attrs = attributes(&head[start..close]);
        let get = |name: &str| {
            attrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let key = get("property")
            .or_else(|| get("name"))
            .map(str::to_ascii_lowercase);
        if let (Some(key), Some(content)) = (key, get("content")) {
            let value = clean(content);
            if key.starts_with("og:") && !value.is_empty() && !tags.iter().any(|(k, _)| *k == key) {
                tags.push((key, value));
            } else if key == "description" && !value.is_empty() {
                description.get_or_insert(value);
            }
        }
        at = close;
    }
    if !tags.iter().any(|(k, _)| k == "og:title")
        && let Some(open) = lower_head.find("<title")
        && let Some(gt) = lower_head[open..].find('>')
    {
        let text_start = open + gt + 1;
        let text_end = lower_head[text_start..]
            .find("</title")
            .map_or(head.len(), |i| text_start + i);
        let title = clean(&head[text_start..text_end]);
        if !title.is_empty() {
            tags.push(("og:title".into(), title));
        }
    }
    if !tags.iter().any(|(k, _)| k == "og:description")
        && let Some(d) = description
    {
        tags.push(("og:description".into(), d));
    }
    tags
}

/// The attributes of a tag's inside (`name="value"`, `name='value'`, `name=value`, `name`),
/// names lowercased.
fn attributes(inside: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = inside;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '/');
        if rest.is_empty() {
            return out;
        }
        let name_end = rest
            .find(|c: char| c.is_ascii_whitespace() || c == '=' || c == '/')
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        rest = rest[name_end..].trim_start();
        let value = if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let body = &after[1..];
                    let end = body.find(q).unwrap_or(body.len());
                    rest = body.get(end + 1..).unwrap_or_default();
                    body[..end].to_owned()
                }
                _ => {
                    let end = after
                        .find(|c: char| c.is_ascii_whitespace())
                        .unwrap_or(after.len());
                    rest = &after[end..];
                    after[..end].to_owned()
                }
            }
        } else {
            String::new()
        };
        if name.is_empty() {
            // A stray character: skip it.
            let mut chars = rest.chars();
            chars.next();
            rest = chars.as_str();
            continue;
        }
        out.push((name, value));
    }
}

/// Decodes entities, collapses white space and caps the length of a tag's text.
fn clean(text: &str) -> String {
    let decoded = decode_entities(text);
    let mut out = String::new();
    for word in decoded.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() > 1000 {
            let mut cut = 1000;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    out
}

/// The character references pages use in tags: the five named ones, `&nbsp;`, and numeric ones.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let semi = rest[..rest.len().min(12)].find(';');
        let decoded = semi.and_then(|semi| {
            let name = &rest[1..semi];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, semi + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_open_graph_tags_from_the_head() {
        let html = r#"<!DOCTYPE html><html><HEAD>
            <title>Fallback &amp; title</title>
            <meta charset="utf-8">
            <META property="og:title" content="Tom &amp; Jerry&#39;s  picnic">
            <meta name='description' content='Plain description'>
            <meta property=og:image content="/img/cat.png" />
            <meta content="Second one wins nothing" property="og:title">
            <meta property="og:description" content="Under &lt;trees&gt; &#x2014; at noon">
            </head><body><meta property="og:site_name" content="in the body"></body></html>"#;
        let tags = open_graph(html);
        let get = |k: &str| {
            tags.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("og:title"), Some("Tom & Jerry's picnic"));
        assert_eq!(get("og:image"), Some("/img/cat.png"));
        assert_eq!(
            get("og:description"),
            Some("Under <trees> \u{2014} at noon")
        );
        assert_eq!(get("og:site_name"), None, "only the head is read");
    }

    #[test]
    fn falls_back_to_title_and_description() {
        let tags = open_graph(
            "<html><head><title>\n  A page\n</title><meta name=\"description\" content=\"About it\"></head>",
        );
        assert_eq!(
            tags,
            vec![
                ("og:title".to_owned(), "A page".to_owned()),
                ("og:description".to_owned(), "About it".to_owned()),
            ]
        );
        assert!(open_graph("").is_empty());
        assert!(open_graph("<meta property=\"og:title\" content=\"unclosed").len() == 1);
        assert!(open_graph("<meta <<< & &#xZZ; =>").is_empty());
    }
}
