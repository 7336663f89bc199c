//! The names of the distribution API: repository names, tags, digests.
//!
//! Every name that reaches the file system goes through these types first,
//! and each one's grammar is the distribution spec's. That grammar is also
//! what keeps storage paths safe: a repository component cannot be empty,
//! `.` or `..`, or start with `_` (the prefix of our own directories), and a
//! tag cannot start with `.`.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Longest repository name we accept (the spec's recommended limit for
/// `<name>` plus a hostname).
const MAX_NAME_LEN: usize = 255;
/// Longest tag, from the spec's `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
const MAX_TAG_LEN: usize = 128;

/// A name that does not follow the distribution spec's grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
    #[error("invalid repository name {0:?} (lowercase letters, digits and `._-` between them, `/` between parts)")]
    Repository(String),
    /// Not `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    #[error("invalid tag {0:?} (up to 128 of `A-Za-z0-9._-`, not starting with `.` or `-`)")]
    Tag(String),
    /// Not `sha256:` and 64 lowercase hex digits.
    #[error("invalid digest {0:?} (only `sha256:` followed by 64 lowercase hex digits is supported)")]
    Digest(String),
}

/// A SHA-256 content address, `sha256:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished hasher computed.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest(hasher.finalize().into())
    }

    /// The 64 lowercase hex digits, the name of the blob file.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Digest {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Digest, NameError> {
        let invalid = || NameError::Digest(text.to_owned());
        let hex_part = text.strip_prefix("sha256:").ok_or_else(invalid)?;
        // `hex` also accepts uppercase; the spec's canonical form does not,
        // and a second spelling would give a second storage path.
        if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| invalid())?;
        Ok(Digest(bytes))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A repository name such as `library/busybox`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(text: &str) -> Result<RepoName, NameError> {
        if text.len() <= MAX_NAME_LEN && text.split('/').all(is_name_component) {
            Ok(RepoName(text.to_owned()))
        } else {
            Err(NameError::Repository(text.to_owned()))
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: alphanumeric runs joined by one `.`,
/// one or two `_`, or any number of `-`.
fn is_name_component(part: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = part.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut separator = String::new();
    for &b in bytes {
        if alnum(b) {
            if !matches!(separator.as_str(), "" | "." | "_" | "__") && !separator.bytes().all(|s| s == b'-') {
                return false;
            }
            separator.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            separator.push(b as char);
        } else {
            return false;
        }
    }
    true
}

/// A tag such as `v1.2` or `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// The tag as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Tag, NameError> {
        let valid_start = text.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        let valid_rest = text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid_start && valid_rest && text.len() <= MAX_TAG_LEN {
            Ok(Tag(text.to_owned()))
        } else {
            Err(NameError::Tag(text.to_owned()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a manifest URL names: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A mutable name.
    Tag(Tag),
    /// An immutable content address.
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Reference, NameError> {
        // A tag cannot contain `:`, so anything with one must be a digest.
        if text.contains(':') { text.parse().map(Reference::Digest) } else { text.parse().map(Reference::Tag) }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(tag) => tag.fmt(f),
            Reference::Digest(digest) => digest.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_spec_grammar() {
        for good in ["busybox", "library/busybox", "a/b/c", "my-app", "my--app", "a.b", "a_b", "a__b", "x9/y0"] {
            assert!(good.parse::<RepoName>().is_ok(), "{good} should be valid");
        }
        for bad in ["", "Busybox", "a//b", "/a", "a/", "..", "a/../b", "_a", "a___b", "a._b", "a.", "-a", "a b"] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        for good in ["latest", "v1.2.3", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(good.parse::<Tag>().is_ok(), "{good} should be valid");
        }
        for bad in ["", ".hidden", "-x", "a/b", "a:b", "..", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn digests_round_trip_and_reject_other_spellings() {
        let digest = Digest::of(b"hello");
        let text = digest.to_string();
        assert_eq!(text, "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(text.parse::<Digest>(), Ok(digest));
        assert!(text.to_uppercase().parse::<Digest>().is_err());
        assert!("sha512:abcd".parse::<Digest>().is_err());
        assert!("sha256:abcd".parse::<Digest>().is_err());
        assert!("sha256:../../../../etc/passwd".parse::<Digest>().is_err());
    }

    #[test]
    fn references_are_tags_unless_they_hold_a_colon() {
        assert!(matches!("v1".parse::<Reference>(), Ok(Reference::Tag(_))));
        let digest = Digest::of(b"x").to_string();
        assert!(matches!(digest.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!("sha256:nothex".parse::<Reference>().is_err());
    }
}
