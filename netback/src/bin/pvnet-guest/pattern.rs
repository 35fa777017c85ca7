//! The byte stream a sender transmits and the hash both ends print, so a test (or a
//! person) can compare what left one guest with what reached the other.

use sha2::{Digest, Sha256};

/// An endless pseudo-random byte stream (xorshift64*), the same for the same seed:
/// unlike a repeating pattern, a lost, duplicated or reordered segment changes the
/// hash.
pub struct PatternStream {
    state: u64,
    block: [u8; 8],
    /// Bytes of `block` already handed out.
    used: usize,
}

impl PatternStream {
    pub fn new(seed: u64) -> Self {
        Self {
            // xorshift must not start at 0.
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
            block: [0; 8],
            used: 8,
        }
    }

    fn next_block(&mut self) -> [u8; 8] {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes()
    }

    /// Fill `out` with the next `out.len()` bytes of the stream.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut i = 0;
        // Finish the current block first, then whole blocks, then start a new one.
        while i < out.len() && self.used < 8 {
            out[i] = self.block[self.used];
            self.used += 1;
            i += 1;
        }
        let mut chunks = out[i..].chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_block());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            self.block = self.next_block();
            let n = rest.len();
            rest.copy_from_slice(&self.block[..n]);
            self.used = n;
        }
    }
}

/// SHA-256 of a byte stream seen in pieces.
#[derive(Default, Clone)]
pub struct StreamHash {
    hasher: Sha256,
    bytes: u64,
}

impl StreamHash {
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The digest as lowercase hex.
    pub fn hex(self) -> String {
        self.hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_does_not_depend_on_how_it_is_cut() {
        let mut whole = vec![0u8; 1000];
        PatternStream::new(7).fill(&mut whole);
        let mut pieces = vec![0u8; 1000];
        let mut s = PatternStream::new(7);
        let mut at = 0;
        for n in [1, 3, 8, 13, 0, 64, 5, 906] {
            s.fill(&mut pieces[at..at + n]);
            at += n;
        }
        assert_eq!(at, 1000);
        assert_eq!(whole, pieces);
        let mut other = vec![0u8; 1000];
        PatternStream::new(8).fill(&mut other);
        assert_ne!(whole, other, "the seed matters");
    }
}
