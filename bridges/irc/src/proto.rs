//! The IRC line protocol (RFC 1459 / 2812): parsing and writing messages, nick case-folding,
//! splitting long text into lines that fit the 512-byte limit.

/// The most bytes an IRC line may have, including the final CR LF.
pub const MAX_LINE: usize = 512;

/// One IRC message: `[:prefix] COMMAND param… [:trailing]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Who sent it: `nick!user@host` or a server name.
    pub prefix: Option<String>,
    /// The command or three-digit numeric, upper case.
    pub command: String,
    /// The parameters; the trailing one (after ` :`) is the last.
    pub params: Vec<String>,
}

impl Message {
    /// Parses one line (without CR LF). IRCv3 tags are skipped. `None` for an empty line.
    pub fn parse(line: &str) -> Option<Self> {
        let mut rest = line.trim_end_matches(['\r', '\n']);
        if rest.starts_with('@') {
            rest = rest.split_once(' ')?.1;
        }
        rest = rest.trim_start_matches(' ');
        let mut prefix = None;
        if let Some(p) = rest.strip_prefix(':') {
            let (p, r) = p.split_once(' ')?;
            prefix = Some(p.to_owned());
            rest = r.trim_start_matches(' ');
        }
        let (head, trailing) = match rest.find(" :") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut words = head.split(' ').filter(|w| !w.is_empty());
        let command = words.next()?.to_ascii_uppercase();
        let mut params: Vec<String> = words.map(str::to_owned).collect();
        if let Some(t) = trailing {
            params.push(t.to_owned());
        }
        Some(Self {
            prefix,
            command,
            params,
        })
    }

    /// The nick of the sender (the prefix before `!`), if any.
    pub fn nick(&self) -> Option<&str> {
        self.prefix
            .as_deref()
            .map(|p| p.split('!').next().unwrap_or(p))
    }

    /// Parameter `i`, or "".
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }
}

/// Writes a command line (without CR LF); the last parameter becomes trailing when it has to.
/// CR, LF and NUL in parameters are replaced by spaces so one call is always one line.
pub fn line(command: &str, params: &[&str]) -> String {
    let mut out = command.to_owned();
    for (i, p) in params.iter().enumerate() {
        let p: String = p
            .chars()
            .map(|c| {
                if matches!(c, '\r' | '\n' | '\0') {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        out.push(' ');
        if i + 1 == params.len() && (p.is_empty() || p.contains(' ') || p.starts_with(':')) {
            out.push(':');
        }
        out.push_str(&p);
    }
    out
}

/// IRC's case-folding (rfc1459 casemapping): ASCII letters plus `[]\~` ≡ `{}|^`.
pub fn fold(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '[' => '{',
            ']' => '}',
            '\\' => '|',
            '~' => '^',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// A Matrix localpart for an IRC nick: lower case letters, digits and `-._` are kept, every
/// other byte becomes `=xx` (its hex value), so different nicks give different localparts.
pub fn localpart_for(nick: &str) -> String {
    tsunagu_appservice::escape_localpart(&fold(nick))
}

/// Splits `text` into pieces of at most `max` bytes, at a space where possible and never
/// inside a UTF-8 character. Empty input gives no pieces.
pub fn split_to_fit(text: &str, max: usize) -> Vec<String> {
    let max = max.max(4);
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(space) = rest[..cut].rfind(' ').filter(|&i| i > max / 2) {
            cut = space;
        }
        out.push(rest[..cut].to_owned());
        rest = rest[cut..].strip_prefix(' ').unwrap_or(&rest[cut..]);
    }
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

/// The payload bytes left for the text of `PRIVMSG {target} :` so that the line the server
/// relays (with our full `nick!user@host` prefix, the host at its longest) stays within
/// [`MAX_LINE`].
pub fn text_budget(command: &str, target: &str, nick: &str) -> usize {
    // ":" nick "!~" user(10) "@" host(63) " " command " " target " :" text "\r\n"
    let overhead = 1 + nick.len() + 2 + 10 + 1 + 63 + 1 + command.len() + 1 + target.len() + 2 + 2;
    MAX_LINE.saturating_sub(overhead)
}

/// A CTCP ACTION body (`/me`): `\x01ACTION text\x01`.
pub fn action(text: &str) -> String {
    format!("\x01ACTION {text}\x01")
}

/// The text of a CTCP ACTION, if `text` is one.
pub fn parse_action(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("\x01ACTION")?;
    let inner = inner.strip_suffix('\x01').unwrap_or(inner);
    Some(inner.strip_prefix(' ').unwrap_or(inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefix_command_params_and_trailing() {
        let m = Message::parse(":bob!~b@host PRIVMSG #chan :hello there :)\r\n").unwrap();
        assert_eq!(m.nick(), Some("bob"));
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, vec!["#chan", "hello there :)"]);
        let m = Message::parse("PING :irc.test").unwrap();
        assert_eq!(
            (m.prefix.as_deref(), m.command.as_str(), m.param(0)),
            (None, "PING", "irc.test")
        );
        let m = Message::parse("@time=x :irc.test 353 me = #c :@op +voice plain").unwrap();
        assert_eq!(m.params, vec!["me", "=", "#c", "@op +voice plain"]);
        assert_eq!(Message::parse(""), None);
    }

    #[test]
    fn writes_trailing_only_when_needed_and_never_two_lines() {
        assert_eq!(line("JOIN", &["#a"]), "JOIN #a");
        assert_eq!(line("PRIVMSG", &["#a", "hi there"]), "PRIVMSG #a :hi there");
        assert_eq!(line("TOPIC", &["#a", ""]), "TOPIC #a :");
        assert_eq!(line("PRIVMSG", &["#a", "x\r\nQUIT"]), "PRIVMSG #a :x  QUIT");
    }

    #[test]
    fn localparts_are_distinct_and_valid() {
        assert_eq!(localpart_for("Alice"), "alice");
        assert_eq!(localpart_for("a[b]"), "a=7bb=7d");
        assert_eq!(
            localpart_for("a{b}"),
            "a=7bb=7d",
            "[ and {{ are the same nick"
        );
        assert_eq!(localpart_for("x|y^"), "x=7cy=5e");
    }

    #[test]
    fn splits_at_spaces_and_char_boundaries() {
        assert_eq!(split_to_fit("hello world", 100), vec!["hello world"]);
        let long = "word ".repeat(50);
        let parts = split_to_fit(long.trim_end(), 32);
        assert!(parts.iter().all(|p| p.len() <= 32 && !p.starts_with(' ')));
        assert_eq!(parts.join(" "), long.trim_end());
        let jp = "つなぐ".repeat(20);
        let parts = split_to_fit(&jp, 10);
        assert!(parts.iter().all(|p| p.len() <= 10));
        assert_eq!(parts.concat(), jp);
        assert!(split_to_fit("", 10).is_empty());
    }

    #[test]
    fn actions_round_trip() {
        assert_eq!(parse_action(&action("waves")), Some("waves"));
        assert_eq!(parse_action("plain"), None);
        assert!(text_budget("PRIVMSG", "#chan", "bridge") > 300);
    }
}
