//! [`ByteString`]: UTF-8 text that shares the bytes it was decoded from.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// An immutable UTF-8 string over [`Bytes`]: decoding a Thrift `string` validates it once
/// and keeps a zero-copy view of the receive buffer; cloning is a reference-count bump.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ByteString(bytestring::ByteString);

impl ByteString {
    /// A string over static text, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        ByteString(bytestring::ByteString::from_static(s))
    }

    /// Validates `bytes` as UTF-8 and wraps them without copying; `None` if invalid.
    pub fn from_utf8(bytes: Bytes) -> Option<Self> {
        bytestring::ByteString::try_from(bytes).ok().map(ByteString)
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Gives up the string, returning its bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }
}

impl Deref for ByteString {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ByteString {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ByteString {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ByteString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ByteString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ByteString {
    fn from(s: &str) -> Self {
        ByteString(bytestring::ByteString::from(s))
    }
}

impl From<String> for ByteString {
    fn from(s: String) -> Self {
        ByteString(bytestring::ByteString::from(s))
    }
}

impl PartialEq<str> for ByteString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ByteString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_validates() {
        let b = Bytes::from_static("héllo".as_bytes());
        let s = ByteString::from_utf8(b.clone()).expect("valid");
        assert_eq!(s, "héllo");
        assert_eq!(s.as_bytes().as_ptr(), b.as_ptr(), "no copy");
        assert!(ByteString::from_utf8(Bytes::from_static(&[0xff, 0xfe])).is_none());
        assert_eq!(ByteString::from_static("x").to_string(), "x");
    }
}
