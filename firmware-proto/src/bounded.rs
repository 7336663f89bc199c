//! Bounded building blocks: identifiers, string lists and fixed byte arrays.
//!
//! Every type here has a capacity fixed at compile time, so a decoder can
//! never be made to allocate, and input longer than a capacity fails while it
//! is decoded (heapless' own `Deserialize` impls behave the same way).

use core::fmt;
use core::marker::PhantomData;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value did not fit the capacity of a bounded field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityError {
    /// Which kind of field overflowed, e.g. `"text list bytes"`.
    pub what: &'static str,
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} capacity exceeded", self.what)
    }
}

impl core::error::Error for CapacityError {}

/// Copies `text` into a bounded string, cutting it at a character boundary
/// if it is too long. For human-readable messages (event reasons), where a
/// cut message beats no message.
pub fn truncated<const N: usize>(text: &str) -> heapless::String<N> {
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = heapless::String::new();
    // Cannot fail: `end <= N` and lies on a char boundary.
    let _ = out.push_str(&text[..end]);
    out
}

/// Copies `text` into a bounded string, or says which capacity it exceeds.
pub fn bounded<const N: usize>(text: &str) -> Result<heapless::String<N>, CapacityError> {
    heapless::String::try_from(text).map_err(|_| CapacityError { what: "string" })
}

// ---------------------------------------------------------------------------
// Name

/// An identifier that is safe inside an MQTT topic and a file name: 1 to `N`
/// bytes of ASCII letters, digits, `-`, `_` and `.`, not starting with `.`.
///
/// Node ids appear in topics (`nodes/{id}/...`), replica ids in paths on the
/// device, so `/`, `+`, `#`, NUL and `..` must never get through. Checked
/// when built and when decoded.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name<const N: usize>(heapless::String<N>);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than its capacity.
    TooLong {
        /// The capacity in bytes.
        max: usize,
    },
    /// The name contains a byte outside `[A-Za-z0-9._-]` or starts with `.`.
    BadCharacter {
        /// Byte offset of the first bad character.
        at: usize,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("name is empty"),
            NameError::TooLong { max } => write!(f, "name is longer than {max} bytes"),
            NameError::BadCharacter { at } => write!(
                f,
                "name has a character other than ASCII letters, digits, '-', '_' or '.' (or a leading '.') at byte {at}"
            ),
        }
    }
}

impl core::error::Error for NameError {}

impl<const N: usize> Name<N> {
    /// Validates and copies `text`.
    pub fn new(text: &str) -> Result<Self, NameError> {
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        if text.len() > N {
            return Err(NameError::TooLong { max: N });
        }
        if let Some(at) = text
            .bytes()
            .enumerate()
            .position(|(i, b)| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0)))
        {
            return Err(NameError::BadCharacter { at });
        }
        let mut inner = heapless::String::new();
        // Cannot fail: the length was checked above.
        let _ = inner.push_str(text);
        Ok(Name(inner))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl<const N: usize> fmt::Debug for Name<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for Name<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> Serialize for Name<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de, const N: usize> Deserialize<'de> for Name<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor<const N: usize>;
        impl<const N: usize> Visitor<'_> for NameVisitor<N> {
            type Value = Name<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an identifier of at most {N} bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Name::new(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(NameVisitor::<N>)
    }
}

// ---------------------------------------------------------------------------
// Packed lists

/// Storage shared by [`TextList`] and [`ByteList`]: all items back to back in
/// one buffer of `BYTES` bytes, plus the end offset of each of at most
/// `ITEMS` items. A list of 16 short strings thus costs its bytes, not
/// 16 x the longest string as `Vec<String<N>, 16>` would.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Packed<const BYTES: usize, const ITEMS: usize> {
    bytes: heapless::Vec<u8, BYTES>,
    ends: heapless::Vec<u16, ITEMS>,
}

impl<const BYTES: usize, const ITEMS: usize> Default for Packed<BYTES, ITEMS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const BYTES: usize, const ITEMS: usize> Packed<BYTES, ITEMS> {
    // Offsets are u16 to keep lists small; refuse to compile a list that
    // could hold more bytes than a u16 can point at.
    const FITS_U16: () = assert!(BYTES <= u16::MAX as usize, "packed list larger than 64 KiB");

    const fn new() -> Self {
        let () = Self::FITS_U16;
        Packed { bytes: heapless::Vec::new(), ends: heapless::Vec::new() }
    }

    fn push(&mut self, item: &[u8]) -> Result<(), CapacityError> {
        if self.ends.is_full() {
            return Err(CapacityError { what: "list items" });
        }
        self.bytes.extend_from_slice(item).map_err(|_| CapacityError { what: "list bytes" })?;
        // Cannot fail: fullness was checked first, and BYTES <= u16::MAX (asserted at compile time).
        let _ = self.ends.push(self.bytes.len() as u16);
        Ok(())
    }

    fn get(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)? as usize;
        let start = if index == 0 { 0 } else { self.ends[index - 1] as usize };
        self.bytes.get(start..end)
    }

    fn len(&self) -> usize {
        self.ends.len()
    }
}

/// A list of at most `ITEMS` strings holding at most `BYTES` bytes together.
/// Encoded as a sequence of strings. Used for argv, environment
/// (`NAME=value`) and file names.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct TextList<const BYTES: usize, const ITEMS: usize>(Packed<BYTES, ITEMS>);

impl<const BYTES: usize, const ITEMS: usize> TextList<BYTES, ITEMS> {
    /// An empty list.
    pub const fn new() -> Self {
        TextList(Packed::new())
    }

    /// Builds a list from strings, failing if any capacity is exceeded.
    pub fn from_strs<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, CapacityError> {
        let mut list = Self::new();
        for item in items {
            list.push(item)?;
        }
        Ok(list)
    }

    /// Appends a string.
    pub fn push(&mut self, item: &str) -> Result<(), CapacityError> {
        self.0.push(item.as_bytes())
    }

    /// The string at `index`.
    pub fn get(&self, index: usize) -> Option<&str> {
        // Only whole `&str`s are ever pushed, so every item is valid UTF-8.
        self.0.get(index).map(|b| core::str::from_utf8(b).unwrap_or_default())
    }

    /// The number of strings.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list holds no string.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// The strings, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }
}

impl<const BYTES: usize, const ITEMS: usize> fmt::Debug for TextList<BYTES, ITEMS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<const BYTES: usize, const ITEMS: usize> Serialize for TextList<BYTES, ITEMS> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de, const BYTES: usize, const ITEMS: usize> Deserialize<'de> for TextList<BYTES, ITEMS> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(PackedVisitor::<Packed<BYTES, ITEMS>, TextItems>(PhantomData)).map(TextList)
    }
}

/// A list of at most `ITEMS` byte strings holding at most `BYTES` bytes
/// together. Encoded as a sequence of byte strings. Used for file contents.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct ByteList<const BYTES: usize, const ITEMS: usize>(Packed<BYTES, ITEMS>);

impl<const BYTES: usize, const ITEMS: usize> ByteList<BYTES, ITEMS> {
    /// An empty list.
    pub const fn new() -> Self {
        ByteList(Packed::new())
    }

    /// Appends a byte string.
    pub fn push(&mut self, item: &[u8]) -> Result<(), CapacityError> {
        self.0.push(item)
    }

    /// The byte string at `index`.
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.0.get(index)
    }

    /// The number of byte strings.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list holds no byte string.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// The byte strings, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }
}

impl<const BYTES: usize, const ITEMS: usize> fmt::Debug for ByteList<BYTES, ITEMS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|b| b.len())).finish()
    }
}

impl<const BYTES: usize, const ITEMS: usize> Serialize for ByteList<BYTES, ITEMS> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(SerBytes))
    }
}

impl<'de, const BYTES: usize, const ITEMS: usize> Deserialize<'de> for ByteList<BYTES, ITEMS> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(PackedVisitor::<Packed<BYTES, ITEMS>, ByteItems>(PhantomData)).map(ByteList)
    }
}

pub(crate) struct SerBytes<'a>(pub(crate) &'a [u8]);

impl Serialize for SerBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Whether a packed list holds strings or byte strings.
pub(crate) trait ItemKind {
    fn deserialize_item<'de, D: Deserializer<'de>, V: Visitor<'de>>(d: D, v: V) -> Result<V::Value, D::Error>;
}
pub(crate) struct TextItems;
pub(crate) struct ByteItems;
impl ItemKind for TextItems {
    fn deserialize_item<'de, D: Deserializer<'de>, V: Visitor<'de>>(d: D, v: V) -> Result<V::Value, D::Error> {
        d.deserialize_str(v)
    }
}
impl ItemKind for ByteItems {
    fn deserialize_item<'de, D: Deserializer<'de>, V: Visitor<'de>>(d: D, v: V) -> Result<V::Value, D::Error> {
        d.deserialize_bytes(v)
    }
}

/// Where a packed list's items go as they are decoded: the inline
/// [`Packed`] here, or the heap-backed store of [`crate::heap`].
pub(crate) trait PackedStore: Default {
    /// Items and bytes it holds at most, for error messages.
    const CAPACITY: (usize, usize);
    /// Appends one item, refusing it past either capacity.
    fn push_item(&mut self, item: &[u8]) -> Result<(), CapacityError>;
}

impl<const BYTES: usize, const ITEMS: usize> PackedStore for Packed<BYTES, ITEMS> {
    const CAPACITY: (usize, usize) = (ITEMS, BYTES);
    fn push_item(&mut self, item: &[u8]) -> Result<(), CapacityError> {
        self.push(item)
    }
}

pub(crate) struct PackedVisitor<P, K>(pub(crate) PhantomData<(P, K)>);

impl<'de, P: PackedStore, K: ItemKind> Visitor<'de> for PackedVisitor<P, K> {
    type Value = P;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (items, bytes) = P::CAPACITY;
        write!(f, "a list of at most {items} items and {bytes} bytes")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut packed = P::default();
        // Each element is appended straight into `packed` by the seed, so the
        // decoder never holds an item anywhere else.
        while seq.next_element_seed(ItemSeed::<P, K> { packed: &mut packed, kind: PhantomData })?.is_some() {}
        Ok(packed)
    }
}

struct ItemSeed<'p, P, K> {
    packed: &'p mut P,
    kind: PhantomData<K>,
}

impl<'de, P: PackedStore, K: ItemKind> DeserializeSeed<'de> for ItemSeed<'_, P, K> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        K::deserialize_item(deserializer, self)
    }
}

impl<'de, P: PackedStore, K> Visitor<'de> for ItemSeed<'_, P, K> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or byte string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.packed.push_item(v.as_bytes()).map_err(E::custom)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.packed.push_item(v).map_err(E::custom)
    }
}

// ---------------------------------------------------------------------------
// Fixed-size byte arrays

/// `N` raw bytes, encoded as exactly `N` bytes with no length prefix.
///
/// serde only derives for arrays up to 32 elements; digests (32), MAC tags
/// (16) and Ed25519 signatures (64) all go through this one type.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes<const N: usize>(pub [u8; N]);

impl<const N: usize> Default for Bytes<N> {
    fn default() -> Self {
        Bytes([0; N])
    }
}

impl<const N: usize> fmt::Debug for Bytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl<const N: usize> Serialize for Bytes<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(N)?;
        for b in &self.0 {
            tuple.serialize_element(b)?;
        }
        tuple.end()
    }
}

impl<'de, const N: usize> Deserialize<'de> for Bytes<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor<const N: usize>;
        impl<'de, const N: usize> Visitor<'de> for BytesVisitor<N> {
            type Value = Bytes<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{N} bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = [0u8; N];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(Bytes(out))
            }
        }
        deserializer.deserialize_tuple(N, BytesVisitor::<N>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_topic_and_path_syntax() {
        for bad in ["", "a/b", "a+b", "a#", ".hidden", "a b", "é", "a\0b"] {
            assert!(Name::<16>::new(bad).is_err(), "{bad:?} must be rejected");
        }
        for good in ["pi-07", "web-7f3a-2", "a.b_c", "X"] {
            assert_eq!(Name::<16>::new(good).unwrap().as_str(), good);
        }
        assert_eq!(Name::<3>::new("abcd"), Err(NameError::TooLong { max: 3 }));
    }

    #[test]
    fn text_list_keeps_items_in_order_and_enforces_both_capacities() {
        let mut list = TextList::<10, 3>::new();
        list.push("ab").unwrap();
        list.push("").unwrap();
        list.push("cdef").unwrap();
        assert_eq!(list.iter().collect::<heapless::Vec<&str, 3>>(), ["ab", "", "cdef"]);
        assert_eq!(list.push("x"), Err(CapacityError { what: "list items" }));
        let mut list = TextList::<4, 3>::new();
        list.push("abc").unwrap();
        assert_eq!(list.push("de"), Err(CapacityError { what: "list bytes" }));
        // A failed push leaves the list as it was.
        assert_eq!(list.len(), 1);
        assert_eq!(list.get(0), Some("abc"));
    }

    #[test]
    fn truncated_cuts_at_a_char_boundary() {
        let s: heapless::String<4> = truncated("aéééé");
        assert_eq!(s.as_str(), "aé");
    }
}
