//! How typed keys become bytes.
//!
//! A key is its parts joined by [`SEP`] (0xFF, a byte that never occurs in UTF-8). Identifiers
//! and strings are their UTF-8 bytes; numbers are fixed-width big-endian, so that byte order is
//! numeric order and a prefix scan returns a room's timeline in stream order.

use ruma::{
    DeviceId, EventId, OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedServerName,
    OwnedUserId, RoomAliasId, RoomId, ServerName, UserId,
};

/// Separator between the parts of a key.
pub const SEP: u8 = 0xFF;

/// One part of a key: how a caller names it (`Ref`) and how it is read back (`Self`).
pub trait Part: Sized {
    /// What a caller passes to build a key: a borrowed ID, a number.
    type Ref<'a>: Copy;
    fn put(r: Self::Ref<'_>, out: &mut Vec<u8>);
    /// Reads the part from the front of `bytes` and returns it with what follows its separator.
    /// The last part of a key runs to the end.
    fn take(bytes: &[u8], last: bool) -> Option<(Self, &[u8])>;
    fn as_key_ref(&self) -> Self::Ref<'_>;
}

/// The bytes of a variable-width part and what follows its separator.
fn split_text(bytes: &[u8], last: bool) -> Option<(&str, &[u8])> {
    let (part, rest) = if last {
        (bytes, &[][..])
    } else {
        let at = bytes.iter().position(|b| *b == SEP)?;
        (&bytes[..at], &bytes[at + 1..])
    };
    Some((std::str::from_utf8(part).ok()?, rest))
}

macro_rules! text_part {
    ($owned:ty, $borrowed:ty) => {
        impl Part for $owned {
            type Ref<'a> = &'a $borrowed;
            fn put(r: Self::Ref<'_>, out: &mut Vec<u8>) {
                out.extend_from_slice(r.as_bytes());
            }
            fn take(bytes: &[u8], last: bool) -> Option<(Self, &[u8])> {
                let (text, rest) = split_text(bytes, last)?;
                Some((<$owned>::try_from(text.to_owned()).ok()?, rest))
            }
            fn as_key_ref(&self) -> Self::Ref<'_> {
                self
            }
        }
    };
}

text_part!(OwnedUserId, UserId);
text_part!(OwnedRoomId, RoomId);
text_part!(OwnedEventId, EventId);
text_part!(OwnedRoomAliasId, RoomAliasId);
text_part!(OwnedServerName, ServerName);

impl Part for OwnedDeviceId {
    type Ref<'a> = &'a DeviceId;
    fn put(r: Self::Ref<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(r.as_bytes());
    }
    fn take(bytes: &[u8], last: bool) -> Option<(Self, &[u8])> {
        let (text, rest) = split_text(bytes, last)?;
        Some((text.into(), rest))
    }
    fn as_key_ref(&self) -> Self::Ref<'_> {
        self
    }
}

impl Part for String {
    type Ref<'a> = &'a str;
    fn put(r: Self::Ref<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(r.as_bytes());
    }
    fn take(bytes: &[u8], last: bool) -> Option<(Self, &[u8])> {
        let (text, rest) = split_text(bytes, last)?;
        Some((text.to_owned(), rest))
    }
    fn as_key_ref(&self) -> Self::Ref<'_> {
        self
    }
}

/// A room, or none (global account data): the empty string.
impl Part for Option<OwnedRoomId> {
    type Ref<'a> = Option<&'a RoomId>;
    fn put(r: Self::Ref<'_>, out: &mut Vec<u8>) {
        if let Some(room) = r {
            out.extend_from_slice(room.as_bytes());
        }
    }
    fn take(bytes: &[u8], last: bool) -> Option<(Self, &[u8])> {
        let (text, rest) = split_text(bytes, last)?;
        if text.is_empty() {
            return Some((None, rest));
        }
        Some((Some(OwnedRoomId::try_from(text.to_owned()).ok()?), rest))
    }
    fn as_key_ref(&self) -> Self::Ref<'_> {
        self.as_deref()
    }
}

macro_rules! number_part {
    ($ty:ty) => {
        impl Part for $ty {
            type Ref<'a> = $ty;
            fn put(r: Self::Ref<'_>, out: &mut Vec<u8>) {
                out.extend_from_slice(&r.to_be_bytes());
            }
            fn take(bytes: &[u8], last: bool) -> Option<(Self, &[u8])> {
                const N: usize = std::mem::size_of::<$ty>();
                let n = <$ty>::from_be_bytes(bytes.get(..N)?.try_into().ok()?);
                let rest = &bytes[N..];
                let rest = if last {
                    rest
                } else {
                    rest.strip_prefix(&[SEP])?
                };
                Some((n, rest))
            }
            fn as_key_ref(&self) -> Self::Ref<'_> {
                *self
            }
        }
    };
}

number_part!(u64);
number_part!(u32);

/// The parts of a table's key. Implemented for tuples of [`Part`]s; a one-part key is named
/// by the part itself.
pub trait Layout: Sized {
    type Ref<'a>: Copy;
    fn encode(r: Self::Ref<'_>, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Option<Self>;
    fn as_key_ref(&self) -> Self::Ref<'_>;
}

impl<A: Part> Layout for (A,) {
    type Ref<'a> = A::Ref<'a>;
    fn encode(r: Self::Ref<'_>, out: &mut Vec<u8>) {
        A::put(r, out);
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        let (a, _) = A::take(bytes, true)?;
        Some((a,))
    }
    fn as_key_ref(&self) -> Self::Ref<'_> {
        self.0.as_key_ref()
    }
}

macro_rules! tuple_layout {
    ($($p:ident $i:tt),+ ; $last:ident $li:tt) => {
        impl<$($p: Part,)+ $last: Part> Layout for ($($p,)+ $last) {
            type Ref<'a> = ($($p::Ref<'a>,)+ $last::Ref<'a>);
            fn encode(r: Self::Ref<'_>, out: &mut Vec<u8>) {
                $( $p::put(r.$i, out); out.push(SEP); )+
                $last::put(r.$li, out);
            }
            #[allow(non_snake_case)]
            fn decode(bytes: &[u8]) -> Option<Self> {
                let rest = bytes;
                $( let ($p, rest) = $p::take(rest, false)?; )+
                let ($last, _) = $last::take(rest, true)?;
                Some(($($p,)+ $last))
            }
            fn as_key_ref(&self) -> Self::Ref<'_> {
                ($(self.$i.as_key_ref(),)+ self.$li.as_key_ref())
            }
        }
    };
}

tuple_layout!(A 0; B 1);
tuple_layout!(A 0, B 1; C 2);
tuple_layout!(A 0, B 1, C 2; D 3);

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<L: Layout + PartialEq + std::fmt::Debug>(value: L) -> Vec<u8> {
        let mut out = Vec::new();
        L::encode(value.as_key_ref(), &mut out);
        assert_eq!(L::decode(&out), Some(value));
        out
    }

    #[test]
    fn parts_are_joined_by_the_separator() {
        let room = ruma::owned_room_id!("!r:x");
        let bytes = roundtrip((room.clone(), 258u64));
        assert_eq!(
            bytes,
            [b"!r:x".as_slice(), &[SEP], &258u64.to_be_bytes()].concat()
        );
        // A number whose bytes hold 0xFF is read by width, not by separator.
        roundtrip((room.clone(), 0xFFFF_u64, 7u32));
        roundtrip((
            ruma::owned_user_id!("@a:x"),
            None::<OwnedRoomId>,
            "m.tag".to_owned(),
        ));
        roundtrip((ruma::owned_user_id!("@a:x"), Some(room), "m.tag".to_owned()));
    }

    #[test]
    fn numbers_sort_by_value() {
        let enc = |n: u64| {
            let mut out = Vec::new();
            <(u64,)>::encode(n, &mut out);
            out
        };
        assert!(enc(255) < enc(256));
        assert!(enc(1) < enc(u64::MAX));
    }

    #[test]
    fn garbage_does_not_decode() {
        assert_eq!(<(OwnedUserId, u64)>::decode(b"@a:x"), None);
        assert_eq!(<(OwnedUserId,)>::decode(b"not a user"), None);
    }
}
