//! Composing the mail the bridge sends (RFC 5322 with MIME), and the small text helpers both
//! directions need.

use std::fmt::Write as _;

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};

use crate::config::ListConfig;

/// `Thu, 03 Dec 2026 07:00:00 +0000` for a Unix time (RFC 5322 §3.3).
pub fn rfc5322_date(t: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = t / 86_400;
    let secs = t % 86_400;
    let (y, m, d) = tsunagu_appservice::civil_date(days as i64);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A header value: as it is when it is printable ASCII, else an RFC 2047 encoded word.
pub fn header_text(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        s
    } else {
        format!("=?UTF-8?B?{}?=", B64.encode(s.as_bytes()))
    }
}

/// `"Display Name" <address>` (the name encoded when it needs to be).
pub fn mailbox(name: &str, address: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    if name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        format!("\"{}\" <{address}>", name.replace(['\\', '"'], ""))
    } else {
        format!("{} <{address}>", header_text(&name))
    }
}

/// A Message-ID for a Matrix event: `<event ID without `$`, made safe@list domain>`.
pub fn message_id_for(event_id: &str, domain: &str) -> String {
    let local: String = event_id
        .trim_start_matches('$')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("<{local}@{domain}>")
}

/// The domain of a list's address.
pub fn domain(list: &ListConfig) -> &str {
    list.address.split_once('@').map_or("", |(_, d)| d)
}

/// The address for one of a list's commands: `alumni+unsubscribe@lists.example.org`.
pub fn command_address(list: &ListConfig, command: &str) -> String {
    let (local, domain) = list.address.split_once('@').unwrap_or((&list.address, ""));
    format!("{local}+{command}@{domain}")
}

/// Lower-case hex of a string (the bounce address names the subscriber with it).
pub fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The string a [`hex`] stands for.
pub fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// A mail the bridge sends.
pub struct Outgoing<'a> {
    /// The list it belongs to.
    pub list: &'a ListConfig,
    /// The author's name (`{name} via {list}` is the From name).
    pub author: &'a str,
    /// `Message-ID`, with its angle brackets.
    pub message_id: &'a str,
    /// `In-Reply-To` and the last of `References`, with angle brackets.
    pub in_reply_to: Option<&'a str>,
    /// `References` before the parent (the thread's root first).
    pub references: Vec<String>,
    /// Where replies go, when not to the list (a confirmation's own address).
    pub reply_to: Option<&'a str>,
    /// The subject.
    pub subject: &'a str,
    /// The plain text.
    pub text: &'a str,
    /// An HTML alternative.
    pub html: Option<&'a str>,
    /// Sent as `Auto-Submitted: auto-replied` (confirmations, not posts).
    pub automatic: bool,
    /// The Unix time it is sent.
    pub date: u64,
    /// Files attached after the text (`multipart/mixed` when there are any).
    pub attachments: &'a [Attachment],
}

/// A file a mail carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Its file name.
    pub name: String,
    /// Its media type (`image/png`); one that is not a plain `type/subtype` is sent as
    /// `application/octet-stream`.
    pub mime: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// `type/subtype` when `mime` is one (RFC 2045 tokens, parameters dropped), else
/// `application/octet-stream`.
fn media_type(mime: &str) -> String {
    let bare = mime.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match bare.split_once('/') {
        Some((t, s)) if token(t) && token(s) => bare.to_ascii_lowercase(),
        _ => "application/octet-stream".into(),
    }
}

/// Longest file name a mail names, in characters (longer ones are shortened, keeping the
/// extension), so its header line stays within RFC 5322's 998 characters.
const MAX_NAME_CHARS: usize = 60;

/// A file name parameter (`filename`, `name`): quoted when it is plain ASCII, else RFC 2231
/// (`filename*=utf-8''…`, percent-encoded).
fn name_param(param: &str, name: &str) -> String {
    let mut name: String = name.chars().filter(|c| !c.is_control()).collect();
    if name.chars().count() > MAX_NAME_CHARS {
        let ext: String = match name.rsplit_once('.') {
            Some((_, ext)) if ext.chars().count() <= 10 => format!(".{ext}"),
            _ => String::new(),
        };
        let stem: String = name
            .chars()
            .take(MAX_NAME_CHARS - ext.chars().count())
            .collect();
        name = format!("{stem}{ext}");
    }
    if name
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        format!("{param}=\"{name}\"")
    } else {
        let encoded: String = name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!("{param}*=utf-8''{encoded}")
    }
}

/// The length of `n` bytes in base64 lines of 76 characters, each with its CRLF.
pub fn encoded_len(n: usize) -> usize {
    let chars = n.div_ceil(3) * 4;
    chars + chars.div_ceil(76) * 2
}

fn base64_lines(data: &[u8]) -> String {
    let encoded = B64.encode(data);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

impl Outgoing<'_> {
    /// The whole mail: headers (with the list headers ordinary clients act on) and a UTF-8
    /// body, base64-encoded; `multipart/alternative` when there is HTML.
    pub fn render(&self) -> Vec<u8> {
        let list = self.list;
        let mut h = String::new();
        let from_name = format!("{} via {}", self.author, list.name);
        let _ = write!(h, "From: {}\r\n", mailbox(&from_name, &list.address));
        let _ = write!(h, "To: {}\r\n", mailbox(&list.name, &list.address));
        let reply_to = self.reply_to.unwrap_or(&list.address);
        let _ = write!(h, "Reply-To: {}\r\n", mailbox(&list.name, reply_to));
        let _ = write!(h, "Subject: {}\r\n", header_text(self.subject));
        let _ = write!(h, "Date: {}\r\n", rfc5322_date(self.date));
        let _ = write!(h, "Message-ID: {}\r\n", self.message_id);
        if let Some(parent) = self.in_reply_to {
            let _ = write!(h, "In-Reply-To: {parent}\r\n");
            let mut refs = self.references.clone();
            if !refs.iter().any(|r| r == parent) {
                refs.push(parent.to_owned());
            }
            let _ = write!(h, "References: {}\r\n", refs.join(" "));
        }
        let label = list.address.replace('@', ".");
        let _ = write!(h, "List-Id: {} <{label}>\r\n", header_text(&list.name));
        let _ = write!(h, "List-Post: <mailto:{}>\r\n", list.address);
        let _ = write!(
            h,
            "List-Unsubscribe: <mailto:{}>\r\n",
            command_address(list, "unsubscribe")
        );
        let _ = write!(
            h,
            "List-Subscribe: <mailto:{}>\r\n",
            command_address(list, "subscribe")
        );
        let _ = write!(
            h,
            "List-Help: <mailto:{}>\r\n",
            command_address(list, "help")
        );
        let _ = write!(h, "X-Loop: {}\r\n", list.address);
        let _ = write!(h, "Precedence: list\r\n");
        if self.automatic {
            let _ = write!(h, "Auto-Submitted: auto-replied\r\n");
        }
        let _ = write!(h, "MIME-Version: 1.0\r\n");
        let tag = hex(self.message_id);
        let tag = tag.get(..24).unwrap_or("b");
        let text_part = format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            base64_lines(self.text.as_bytes())
        );
        let body = match self.html {
            None => text_part,
            Some(html) => {
                let boundary = format!("=_tsunagu_a_{tag}");
                format!(
                    "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n\
                     --{boundary}\r\n{text_part}--{boundary}\r\n\
                     Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
                     --{boundary}--\r\n",
                    base64_lines(html.as_bytes())
                )
            }
        };
        if self.attachments.is_empty() {
            h.push_str(&body);
            return h.into_bytes();
        }
        let boundary = format!("=_tsunagu_m_{tag}");
        let _ = write!(
            h,
            "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n{body}"
        );
        for file in self.attachments {
            let mut mime = media_type(&file.mime);
            if mime.starts_with("text/") && std::str::from_utf8(&file.data).is_ok() {
                mime.push_str("; charset=utf-8");
            }
            let _ = write!(
                h,
                "--{boundary}\r\nContent-Type: {mime}; {}\r\n\
                 Content-Disposition: attachment; {}\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}",
                name_param("name", &file.name),
                name_param("filename", &file.name),
                base64_lines(&file.data)
            );
        }
        let _ = write!(h, "--{boundary}--\r\n");
        h.into_bytes()
    }
}

/// A mail reply's own text: the quoted message it answers (a trailing block of `>` lines and
/// the `On … wrote:` line before it) removed.
pub fn strip_quoted(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut end = lines.len();
    while end > 0 && (lines[end - 1].trim().is_empty() || lines[end - 1].starts_with('>')) {
        end -= 1;
    }
    if end < lines.len() && end > 0 && lines[end - 1].trim_end().ends_with("wrote:") {
        end -= 1;
    }
    // Only when something was quoted; a message that is all quote stays as it is.
    if end == 0 {
        return text.trim().to_owned();
    }
    lines[..end].join("\n").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> ListConfig {
        ListConfig {
            address: "alumni@lists.example.org".into(),
            name: "Alumni".into(),
        }
    }

    #[test]
    fn dates_and_headers() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_796_281_200),
            "Thu, 03 Dec 2026 07:00:00 +0000"
        );
        assert_eq!(header_text("plain"), "plain");
        assert_eq!(header_text("café"), "=?UTF-8?B?Y2Fmw6k=?=");
        assert_eq!(mailbox("A \"B\"", "a@b"), "\"A B\" <a@b>");
        assert_eq!(
            unhex(&hex("bob@example.org")).as_deref(),
            Some("bob@example.org")
        );
        assert_eq!(unhex("zz"), None);
        assert_eq!(message_id_for("$a+b/c", "l.x"), "<a_b_c@l.x>");
        assert_eq!(
            command_address(&list(), "subscribe"),
            "alumni+subscribe@lists.example.org"
        );
    }

    #[test]
    fn renders_a_list_mail_that_parses_back() {
        let list = list();
        let raw = Outgoing {
            list: &list,
            author: "Zoë",
            message_id: "<m2@lists.example.org>",
            in_reply_to: Some("<m1@example.org>"),
            references: vec!["<m0@example.org>".into()],
            reply_to: None,
            subject: "Re: Reunion",
            text: "Friday works.\n.\nSee you",
            html: Some("<p>Friday works.</p>"),
            automatic: false,
            date: 0,
            attachments: &[],
        }
        .render();
        let m = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(m.subject(), Some("Re: Reunion"));
        assert_eq!(m.message_id(), Some("m2@lists.example.org"));
        assert_eq!(m.in_reply_to().as_text(), Some("m1@example.org"));
        assert_eq!(m.body_text(0).as_deref(), Some("Friday works.\n.\nSee you"));
        assert_eq!(m.body_html(0).as_deref(), Some("<p>Friday works.</p>"));
        let from = m.from().and_then(|a| a.first()).unwrap();
        assert_eq!(from.name(), Some("Zoë via Alumni"));
        assert_eq!(from.address(), Some("alumni@lists.example.org"));
        let header = |name: &str| m.header_raw(name).map(str::trim).map(str::to_owned);
        assert_eq!(
            header("List-Id").as_deref(),
            Some("Alumni <alumni.lists.example.org>")
        );
        assert_eq!(
            header("List-Unsubscribe").as_deref(),
            Some("<mailto:alumni+unsubscribe@lists.example.org>")
        );
        assert_eq!(
            header("X-Loop").as_deref(),
            Some("alumni@lists.example.org")
        );
    }

    #[test]
    fn attachments_ride_along_and_parse_back() {
        use mail_parser::MimeHeaders as _;
        let list = list();
        let files = [
            Attachment {
                name: "Grüße.txt".into(),
                mime: "text/plain; charset=utf-8".into(),
                data: b"hello\r\n".to_vec(),
            },
            Attachment {
                name: "photo \"1\".png".into(),
                mime: "bogus type\r\nX-Evil: 1".into(),
                data: (0..=255u8).collect(),
            },
        ];
        let raw = Outgoing {
            list: &list,
            author: "Alice",
            message_id: "<m3@lists.example.org>",
            in_reply_to: None,
            references: vec![],
            reply_to: None,
            subject: "Photos",
            text: "From Friday",
            html: Some("<p>From Friday</p>"),
            automatic: false,
            date: 0,
            attachments: &files,
        }
        .render();
        assert!(!raw.windows(7).any(|w| w == b"X-Evil:"));
        let long = Outgoing {
            list: &list,
            author: "A",
            message_id: "<m4@l>",
            in_reply_to: None,
            references: vec![],
            reply_to: None,
            subject: "s",
            text: "t",
            html: None,
            automatic: false,
            date: 0,
            attachments: &[Attachment {
                name: format!("{}.pdf", "ü".repeat(400)),
                mime: "application/pdf".into(),
                data: vec![1],
            }],
        }
        .render();
        assert!(long.split(|b| *b == b'\n').all(|line| line.len() <= 998));
        let parsed = mail_parser::MessageParser::default().parse(&long).unwrap();
        let name = parsed
            .attachments()
            .next()
            .unwrap()
            .attachment_name()
            .unwrap();
        assert!(
            name.ends_with(".pdf") && name.chars().count() == MAX_NAME_CHARS,
            "{name}"
        );
        let m = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(m.body_text(0).as_deref(), Some("From Friday"));
        assert_eq!(m.body_html(0).as_deref(), Some("<p>From Friday</p>"));
        let got: Vec<_> = m
            .attachments()
            .map(|a| {
                (
                    a.attachment_name().unwrap_or_default().to_owned(),
                    a.content_type()
                        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()))
                        .unwrap_or_default(),
                    a.contents().to_vec(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "Grüße.txt".into(),
                    "text/plain".into(),
                    b"hello\r\n".to_vec()
                ),
                (
                    "photo \"1\".png".into(),
                    "application/octet-stream".into(),
                    (0..=255u8).collect()
                ),
            ]
        );
    }

    #[test]
    fn quoted_replies_are_trimmed() {
        let reply = "Yes!\n\nOn Thu, Bob wrote:\n> Shall we?\n> \n";
        assert_eq!(strip_quoted(reply), "Yes!");
        assert_eq!(strip_quoted("no quote"), "no quote");
        assert_eq!(strip_quoted("> only quote"), "> only quote");
    }
}
