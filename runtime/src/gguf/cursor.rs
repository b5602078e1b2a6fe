//! Bounds-checked little-endian reads over the file bytes. Every read checks the remaining
//! length first, so a hostile count can never make us read or allocate past the file.

use super::GgufError;
use std::fmt::Display;

pub(super) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// `what` is only formatted on error (pass `&format_args!(..)`).
    pub fn take(&mut self, n: u64, what: &dyn Display) -> Result<&'a [u8], GgufError> {
        let available = self.remaining();
        match usize::try_from(n) {
            Ok(n) if n <= available => {
                let out = &self.bytes[self.pos..self.pos + n];
                self.pos += n;
                Ok(out)
            }
            _ => Err(GgufError::Truncated {
                offset: self.pos as u64,
                what: what.to_string(),
                needed: n,
                available: available as u64,
            }),
        }
    }

    pub fn array<const N: usize>(&mut self, what: &dyn Display) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u8(&mut self, what: &dyn Display) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u32(&mut self, what: &dyn Display) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &dyn Display) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Checks that `count` items of at least `min_item_bytes` each can fit in what is left.
    /// Called before allocating anything sized by `count`.
    pub fn check_count(
        &self,
        count: u64,
        min_item_bytes: u64,
        count_offset: usize,
        what: &dyn Display,
    ) -> Result<usize, GgufError> {
        let remaining = self.remaining() as u64;
        let max = remaining / min_item_bytes;
        if count > max {
            return Err(GgufError::CountTooLarge {
                offset: count_offset as u64,
                what: what.to_string(),
                count,
                max,
                remaining,
            });
        }
        // count <= remaining bytes, so it fits usize.
        Ok(count as usize)
    }

    /// A GGUF string: u64 length, then UTF-8 bytes (no terminator).
    pub fn string(&mut self, max_len: u64, what: &dyn Display) -> Result<String, GgufError> {
        let offset = self.pos as u64;
        let len = self.u64(&format_args!("length of {what}"))?;
        if len > max_len {
            return Err(GgufError::StringTooLong {
                offset,
                what: what.to_string(),
                len,
                max: max_len,
            });
        }
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                offset,
                what: what.to_string(),
            }),
        }
    }
}
