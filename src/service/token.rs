//! Sync and pagination tokens: one type for both.
//!
//! A token names a point in the stream: everything at positions up to and including `pos` is
//! before it. `/sync` hands out `{pos}_{typing}_{to_device}`: the typing part tells which
//! typing changes a client has seen, the to-device part up to which position its device has
//! received to-device messages (a sync delivers at most `limits.to_device_per_sync`, so it may
//! lag behind `pos`). `/messages`, `/context` and the sync timelines' `prev_batch` hand out
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
    /// To-device messages up to this position were delivered (`pos` when all were).
    pub to_device: u64,
}

impl StreamToken {
    /// The point after the event at `pos`.
    pub fn after(pos: u64) -> Self {
        Self {
            pos,
            typing: 0,
            to_device: pos,
        }
    }

    /// The point before the event at `pos`.
    pub fn before(pos: u64) -> Self {
        Self::after(pos.saturating_sub(1))
    }

    /// Parses `{pos}_{typing}_{to_device}`, `{pos}_{typing}` or `{pos}`, or fails with
    /// M_INVALID_PARAM.
    pub fn parse(token: &str) -> Result<Self> {
        let invalid = || Error::invalid_param(format!("Invalid token {token:?}"));
        let mut parts = token.split('_');
        let mut number = |default: Option<u64>| match (parts.next(), default) {
            (Some(p), _) => p.parse::<u64>().map_err(|_| invalid()),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(invalid()),
        };
        let pos = number(None)?;
        let typing = number(Some(0))?;
        let to_device = number(Some(pos))?;
        if parts.next().is_some() || to_device > pos {
            return Err(invalid());
        }
        Ok(Self {
            pos,
            typing,
            to_device,
        })
    }

    /// The token as a pagination token (no typing part).
    pub fn pagination(self) -> String {
        self.pos.to_string()
    }
}

impl fmt::Display for StreamToken {
    /// The sync form, `{pos}_{typing}_{to_device}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}_{}", self.pos, self.typing, self.to_device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_and_pagination_forms_parse() {
        let t = StreamToken::parse("42_7").unwrap();
        assert_eq!((t.pos, t.typing, t.to_device), (42, 7, 42));
        assert_eq!(t.to_string(), "42_7_42");
        let d = StreamToken::parse("42_7_40").unwrap();
        assert_eq!(d.to_device, 40);
        assert_eq!(StreamToken::parse(&d.to_string()).unwrap(), d);
        let p = StreamToken::parse("42").unwrap();
        assert_eq!((p.pos, p.typing), (42, 0));
        assert_eq!(StreamToken::before(43).pagination(), "42");
        assert_eq!(StreamToken::before(0).pos, 0);
    }

    #[test]
    fn garbage_is_an_invalid_param() {
        for bad in ["", "x", "1_x", "-1", "1_2_3_4", "1_2_3", "s12"] {
            let err = StreamToken::parse(bad).unwrap_err();
            assert_eq!(
                err.kind().map(|k| k.errcode()),
                Some(ruma::api::error::ErrorKind::InvalidParam.errcode()),
                "{bad}"
            );
        }
    }
}
