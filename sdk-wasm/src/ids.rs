//! Minting ids: random version-4 UUIDs for message ids and anonymous ids.
//!
//! Where the randomness comes from is the [`Environment`](crate::Environment)'s business
//! (`crypto.getRandomValues` in a browser); this module only lays the bytes out as a UUID, so
//! the layout is tested natively.

use crate::prelude::*;

/// Formats sixteen random bytes as a version-4, variant-1 UUID in lowercase hex.
///
/// Six of the 128 bits are fixed by the format (version and variant); the other 122 come
/// from `bytes` unchanged.
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";

    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;

    // Written into a fixed buffer: every message mints an id, and pushing characters one
    // at a time cost more than the rest of the layout.
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            at += 1;
        }
        if let Some(pair) = text.get_mut(at..at + 2) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0x0f)];
        }
        at += 2;
    }
    crate::json::ascii(&text)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn zero_bytes_give_a_version_4_variant_1_uuid() {
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn all_ones_keep_every_random_bit() {
        assert_eq!(uuid_v4([0xff; 16]), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }

    #[test]
    fn bytes_are_laid_out_in_order() {
        let bytes = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0x4d, 0xef, 0x81, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];

        assert_eq!(uuid_v4(bytes), "01234567-89ab-4def-8123-456789abcdef");
    }
}
