//! Sync and pagination tokens: one type for both.
//!
//! A token names a point in the stream: everything at positions up to and including `pos` is
//! before it. `/sync` hands out `{pos}_{typing}` (the typing part tells which typing changes a
//! client has seen); `/messages`, `/context` and the sync timelines' `prev_batch` hand out
//! `{pos}`. Any of them is accepted wherever a token is asked for, so a client may paginate
//! back from a sync's `next_batch` or `prev_batch` and get exactly the events before it.

use std::fmt;

use crate::error::{Error, Result};

/// A point in the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamToken {
    /// Events at positions `<= pos` are before this point.
    pub pos: u64,
    /// The typing serial a sync reported up to (0 in pagination tokens).
    pub typing: u64,
}

impl StreamToken {
    /// The point after the event at `pos`.
    pub fn after(pos: u64) -> Self {
        Self { pos, typing: 0 }
    }

    /// The point before the event at `pos`.
    pub fn before(pos: u64) -> Self {
        Self::after(pos.saturating_sub(1))
    }

    /// Parses `{pos}_{typing}` or `{pos}`, or fails with M_INVALID_PARAM.
    pub fn parse(token: &str) -> Result<Self> {
        let invalid = || Error::invalid_param(format!("Invalid token {token:?}"));
        let (pos, typing) = match token.split_once('_') {
            Some((pos, typing)) => (pos, typing.parse().map_err(|_| invalid())?),
            None => (token, 0),
        };
        Ok(Self {
            pos: pos.parse().map_err(|_| invalid())?,
            typing,
        })
    }

    /// The token as a pagination token (no typing part).
    pub fn pagination(self) -> String {
        self.pos.to_string()
    }
}

impl fmt::Display for StreamToken {
    /// The sync form, `{pos}_{typing}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.pos, self.typing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_and_pagination_forms_parse() {
        let t = StreamToken::parse("42_7").unwrap();
        assert_eq!((t.pos, t.typing), (42, 7));
        assert_eq!(t.to_string(), "42_7");
        let p = StreamToken::parse("42").unwrap();
        assert_eq!((p.pos, p.typing), (42, 0));
        assert_eq!(StreamToken::before(43).pagination(), "42");
        assert_eq!(StreamToken::before(0).pos, 0);
    }

    #[test]
    fn garbage_is_an_invalid_param() {
        for bad in ["", "x", "1_x", "-1", "1_2_3", "s12"] {
            let err = StreamToken::parse(bad).unwrap_err();
            assert_eq!(
                err.kind().map(|k| k.errcode()),
                Some(ruma::api::error::ErrorKind::InvalidParam.errcode()),
                "{bad}"
            );
        }
    }
}
