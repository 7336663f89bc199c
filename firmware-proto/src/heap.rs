//! Bounded types on the heap, for the Linux profile (feature `alloc`).
//!
//! A Linux device has megabytes to spare but must still never be made to
//! hold more than a document's limits: these types keep their items in
//! `Vec`s and `String`s sized to what arrived, and refuse, while decoding,
//! any input over their capacity (the decoder counts items as it goes and
//! never pre-allocates from a length it was sent). They encode exactly as
//! their inline counterparts in [`crate::bounded`] do.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bounded::{ByteItems, CapacityError, PackedStore, PackedVisitor, SerBytes, TextItems};

// ---------------------------------------------------------------------------
// List

/// At most `N` items of `T`, encoded as a sequence.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct List<T, const N: usize>(Vec<T>);

impl<T, const N: usize> List<T, N> {
    /// An empty list.
    pub const fn new() -> Self {
        List(Vec::new())
    }

    /// Appends an item, or says the list is full.
    pub fn push(&mut self, item: T) -> Result<(), CapacityError> {
        if self.0.len() >= N {
            return Err(CapacityError { what: "list items" });
        }
        self.0.push(item);
        Ok(())
    }

    /// The items.
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    /// The items, mutably (the length cannot grow through this).
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.0
    }

    /// The items, owned.
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }
}

impl<T, const N: usize> Default for List<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> core::ops::Deref for List<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<'a, T, const N: usize> IntoIterator for &'a List<T, N> {
    type Item = &'a T;
    type IntoIter = core::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T, const N: usize> TryFrom<Vec<T>> for List<T, N> {
    type Error = CapacityError;
    fn try_from(items: Vec<T>) -> Result<Self, CapacityError> {
        if items.len() > N {
            return Err(CapacityError { what: "list items" });
        }
        Ok(List(items))
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for List<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Serialize, const N: usize> Serialize for List<T, N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(&self.0)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for List<T, N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for ListVisitor<T, N> {
            type Value = List<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {N} items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Never trust the sent length for the allocation: grow as
                // items actually arrive, and stop at N.
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if items.len() >= N {
                        return Err(de::Error::custom(CapacityError { what: "list items" }));
                    }
                    items.push(item);
                }
                Ok(List(items))
            }
        }
        deserializer.deserialize_seq(ListVisitor::<T, N>(PhantomData))
    }
}

// ---------------------------------------------------------------------------
// Text

/// A string of at most `N` bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Text<const N: usize>(String);

impl<const N: usize> Text<N> {
    /// Copies `text`, or says it is over `N` bytes.
    pub fn new(text: &str) -> Result<Self, CapacityError> {
        if text.len() > N {
            return Err(CapacityError { what: "string" });
        }
        Ok(Text(String::from(text)))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const N: usize> core::ops::Deref for Text<N> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<const N: usize> fmt::Display for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const N: usize> Serialize for Text<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de, const N: usize> Deserialize<'de> for Text<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<const N: usize>;
        impl<const N: usize> Visitor<'_> for TextVisitor<N> {
            type Value = Text<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string of at most {N} bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Text::new(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(TextVisitor::<N>)
    }
}

// ---------------------------------------------------------------------------
// Packed lists on the heap

/// Items back to back in one `Vec`, with each item's end offset.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
struct HeapPacked<const BYTES: usize, const ITEMS: usize> {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl<const BYTES: usize, const ITEMS: usize> HeapPacked<BYTES, ITEMS> {
    const FITS_U32: () = assert!(BYTES <= u32::MAX as usize, "packed list larger than 4 GiB");

    fn get(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)? as usize;
        let start = if index == 0 { 0 } else { self.ends[index - 1] as usize };
        self.bytes.get(start..end)
    }
}

impl<const BYTES: usize, const ITEMS: usize> PackedStore for HeapPacked<BYTES, ITEMS> {
    const CAPACITY: (usize, usize) = (ITEMS, BYTES);
    fn push_item(&mut self, item: &[u8]) -> Result<(), CapacityError> {
        let () = Self::FITS_U32;
        if self.ends.len() >= ITEMS {
            return Err(CapacityError { what: "list items" });
        }
        if self.bytes.len() + item.len() > BYTES {
            return Err(CapacityError { what: "list bytes" });
        }
        self.bytes.extend_from_slice(item);
        self.ends.push(self.bytes.len() as u32);
        Ok(())
    }
}

/// At most `ITEMS` strings holding at most `BYTES` bytes together: argv,
/// environment, file names. Encoded as a sequence of strings.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Texts<const BYTES: usize, const ITEMS: usize>(HeapPacked<BYTES, ITEMS>);

impl<const BYTES: usize, const ITEMS: usize> Texts<BYTES, ITEMS> {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a list, failing if any capacity is exceeded.
    pub fn from_strs<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, CapacityError> {
        let mut list = Self::new();
        for item in items {
            list.push(item)?;
        }
        Ok(list)
    }

    /// Appends a string.
    pub fn push(&mut self, item: &str) -> Result<(), CapacityError> {
        self.0.push_item(item.as_bytes())
    }

    /// The string at `index`.
    pub fn get(&self, index: usize) -> Option<&str> {
        // Only whole `&str`s are ever pushed.
        self.0.get(index).map(|b| core::str::from_utf8(b).unwrap_or_default())
    }

    /// The number of strings.
    pub fn len(&self) -> usize {
        self.0.ends.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.ends.is_empty()
    }

    /// Bytes of all strings together.
    pub fn bytes(&self) -> usize {
        self.0.bytes.len()
    }

    /// The strings, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }
}

impl<const BYTES: usize, const ITEMS: usize> fmt::Debug for Texts<BYTES, ITEMS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<const BYTES: usize, const ITEMS: usize> Serialize for Texts<BYTES, ITEMS> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de, const BYTES: usize, const ITEMS: usize> Deserialize<'de> for Texts<BYTES, ITEMS> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(PackedVisitor::<HeapPacked<BYTES, ITEMS>, TextItems>(PhantomData)).map(Texts)
    }
}

/// At most `ITEMS` byte strings holding at most `BYTES` bytes together:
/// file contents. Encoded as a sequence of byte strings.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Blobs<const BYTES: usize, const ITEMS: usize>(HeapPacked<BYTES, ITEMS>);

impl<const BYTES: usize, const ITEMS: usize> Blobs<BYTES, ITEMS> {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a byte string.
    pub fn push(&mut self, item: &[u8]) -> Result<(), CapacityError> {
        self.0.push_item(item)
    }

    /// The byte string at `index`.
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.0.get(index)
    }

    /// The number of byte strings.
    pub fn len(&self) -> usize {
        self.0.ends.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.ends.is_empty()
    }

    /// Bytes of all items together.
    pub fn bytes(&self) -> usize {
        self.0.bytes.len()
    }

    /// The byte strings, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }
}

impl<const BYTES: usize, const ITEMS: usize> fmt::Debug for Blobs<BYTES, ITEMS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|b| b.len())).finish()
    }
}

impl<const BYTES: usize, const ITEMS: usize> Serialize for Blobs<BYTES, ITEMS> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(SerBytes))
    }
}

impl<'de, const BYTES: usize, const ITEMS: usize> Deserialize<'de> for Blobs<BYTES, ITEMS> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(PackedVisitor::<HeapPacked<BYTES, ITEMS>, ByteItems>(PhantomData)).map(Blobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_lists_encode_like_their_inline_counterparts() {
        let inline = crate::TextList::<64, 4>::from_strs(["a", "bc"]).unwrap();
        let heap = Texts::<64, 4>::from_strs(["a", "bc"]).unwrap();
        assert_eq!(postcard::to_allocvec(&inline).unwrap(), postcard::to_allocvec(&heap).unwrap());
        let inline: heapless::Vec<u16, 4> = heapless::Vec::from_slice(&[1, 300]).unwrap();
        let heap = List::<u16, 4>::try_from(alloc::vec![1, 300]).unwrap();
        assert_eq!(postcard::to_allocvec(&inline).unwrap(), postcard::to_allocvec(&heap).unwrap());
    }

    #[test]
    fn decoding_refuses_more_than_the_capacity() {
        let three = postcard::to_allocvec(&List::<u8, 3>::try_from(alloc::vec![1, 2, 3]).unwrap()).unwrap();
        assert!(postcard::from_bytes::<List<u8, 2>>(&three).is_err());
        assert!(postcard::from_bytes::<List<u8, 3>>(&three).is_ok());
        let text = postcard::to_allocvec("abcd").unwrap();
        assert!(postcard::from_bytes::<Text<3>>(&text).is_err());
        let texts = postcard::to_allocvec(&Texts::<8, 4>::from_strs(["abcd", "efgh"]).unwrap()).unwrap();
        assert!(postcard::from_bytes::<Texts<7, 4>>(&texts).is_err());
        assert!(postcard::from_bytes::<Texts<8, 1>>(&texts).is_err());
        // A claimed length of 2^32 items in a few bytes allocates nothing.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 1];
        assert!(postcard::from_bytes::<List<u8, 64>>(&claim).is_err());
    }
}
