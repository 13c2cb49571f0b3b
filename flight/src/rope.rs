//! [`Rope`]: bytes in pieces, read in order without being joined.
//!
//! A `DoGet` message is a few hundred bytes of framing followed by the buffers of a record
//! batch. As one rope it is one chunk of the response body, so h2 sends it as frames of the
//! size the client accepts, each written with one vectored write over the pieces, and no piece
//! is copied on the way.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Pieces of bytes that read as their concatenation.
#[derive(Debug, Default)]
pub(crate) struct Rope {
    pieces: VecDeque<Bytes>,
    remaining: usize,
}

impl Rope {
    pub(crate) fn with_capacity(pieces: usize) -> Self {
        Self {
            pieces: VecDeque::with_capacity(pieces),
            remaining: 0,
        }
    }

    /// Append `piece` (an empty one is dropped, so [`Buf::chunk`] is empty only at the end).
    pub(crate) fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.remaining += piece.len();
            self.pieces.push_back(piece);
        }
    }
}

impl From<Bytes> for Rope {
    fn from(piece: Bytes) -> Self {
        let mut rope = Self::with_capacity(1);
        rope.push(piece);
        rope
    }
}

impl Buf for Rope {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.pieces.front().map_or(&[], |piece| piece.as_ref())
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, piece) in dst.iter_mut().zip(&self.pieces) {
            *slot = IoSlice::new(piece);
            filled += 1;
        }
        filled
    }

    /// Past the next `count` bytes; as every `Buf`, panics if fewer remain.
    fn advance(&mut self, mut count: usize) {
        assert!(
            count <= self.remaining,
            "advance past the end of a rope: {count} > {}",
            self.remaining
        );
        self.remaining -= count;
        while let Some(front) = self.pieces.front_mut() {
            if count < front.len() {
                front.advance(count);
                return;
            }
            count -= front.len();
            self.pieces.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        // a prefix inside the first piece is shared, not copied
        match self.pieces.front_mut() {
            Some(front) if len <= front.len() => {
                let taken = front.split_to(len);
                self.remaining -= len;
                if front.is_empty() {
                    self.pieces.pop_front();
                }
                taken
            }
            _ => {
                assert!(
                    len <= self.remaining,
                    "copy past the end of a rope: {len} > {}",
                    self.remaining
                );
                let mut out = bytes::BytesMut::with_capacity(len);
                let mut rest = len;
                while rest > 0 {
                    let chunk = self.chunk();
                    let n = chunk.len().min(rest);
                    out.extend_from_slice(&chunk[..n]);
                    self.advance(n);
                    rest -= n;
                }
                out.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rope(pieces: &[&'static [u8]]) -> Rope {
        let mut rope = Rope::default();
        for piece in pieces {
            rope.push(Bytes::from_static(piece));
        }
        rope
    }

    #[test]
    fn reads_as_the_concatenation_across_pieces() {
        let mut r = rope(&[b"ab", b"", b"cde", b"f"]);
        assert_eq!(r.remaining(), 6);
        assert_eq!(r.chunk(), b"ab");
        r.advance(3);
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.chunk(), b"de");
        let mut rest = Vec::new();
        rest.extend_from_slice(&r.copy_to_bytes(3));
        assert_eq!(rest, b"def");
        assert_eq!(r.remaining(), 0);
        assert!(r.chunk().is_empty());
    }

    #[test]
    fn vectored_chunks_are_the_pieces() {
        let r = rope(&[b"ab", b"cde", b"f"]);
        let mut slots = [IoSlice::new(&[]); 2];
        assert_eq!(r.chunks_vectored(&mut slots), 2);
        assert_eq!(&*slots[0], b"ab");
        assert_eq!(&*slots[1], b"cde");
        let mut slots = [IoSlice::new(&[]); 8];
        assert_eq!(r.chunks_vectored(&mut slots), 3);
    }

    #[test]
    fn a_prefix_of_the_first_piece_is_shared() {
        let piece = Bytes::from(vec![1u8; 100]);
        let mut r = Rope::from(piece.clone());
        r.push(Bytes::from_static(b"tail"));
        let head = r.copy_to_bytes(40);
        assert_eq!(head.as_ptr(), piece.as_ptr());
        assert_eq!(r.remaining(), 64);
        let all = r.copy_to_bytes(64);
        assert_eq!(&all[60..], b"tail");
    }

    #[test]
    #[should_panic(expected = "advance past the end")]
    fn advancing_past_the_end_panics_like_every_buf() {
        rope(&[b"ab"]).advance(3);
    }
}
