//! Request decoding: content types, `Content-Encoding` and the 500 KB limit, then the batch
//! or message the body holds.
//!
//! The first byte picks the headers and the route, the second how the body is cut into
//! chunks, and the rest is the body (gzip-compressed here first when the first byte says
//! so, so that the fuzzer also explores compressed JSON). The body goes through
//! `ebb_collector::ingest::body`, the code the handlers run. Beyond not panicking:
//!
//! - the answer does not depend on the content type, nor on how the body is chunked;
//! - it agrees with flate2's reading decoders: the same bytes when accepted, refused as too
//!   large exactly when the decoded body passes `MAX_BATCH_BYTES`;
//! - decoding never allocates much more than the limit, however well the body compresses;
//! - what is accepted then decodes under the invariants of `ebb_fuzz::check_envelope`.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::http::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use ebb_collector::error::ApiError;
use ebb_collector::ingest::body::{decode_body, BodyDecoder};
use ebb_fuzz::{check_code, check_envelope, SINGLE_KINDS};
use ebb_protocol::decode::{decode_batch, decode_single};
use ebb_protocol::MAX_BATCH_BYTES;
use flate2::read::{GzDecoder, ZlibDecoder};
use flate2::write::GzEncoder;
use flate2::Compression;
use libfuzzer_sys::fuzz_target;

/// Counts the bytes allocated, to bound what decoding one body may hold at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most that decoding one body may allocate beyond what was live before: the body at
/// the limit, the growth of its buffer, and the decompressor's own state.
const MEMORY_BOUND: usize = 4 * MAX_BATCH_BYTES;

const ENCODINGS: [&str; 8] = [
    "",
    "gzip",
    " GZip ",
    "deflate",
    "identity",
    "br",
    "gzip, identity",
    "x-gzip",
];

const CONTENT_TYPES: [&str; 4] = [
    "application/json",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "",
];

#[derive(Debug, PartialEq)]
enum Outcome {
    Body(Vec<u8>),
    TooLarge,
    Unreadable,
}

fn outcome(result: Result<Vec<u8>, ApiError>) -> Outcome {
    match result {
        Ok(bytes) => Outcome::Body(bytes),
        Err(ApiError::PayloadTooLarge { limit }) => {
            assert_eq!(limit, MAX_BATCH_BYTES, "the refusal names another limit");
            Outcome::TooLarge
        }
        Err(ApiError::UnreadableBody(_)) => Outcome::Unreadable,
        Err(other) => panic!("decoding a body failed with {other:?}"),
    }
}

fn headers(encoding: &'static str, content_type: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [(CONTENT_ENCODING, encoding), (CONTENT_TYPE, content_type)] {
        if !value.is_empty() {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    headers
}

/// What flate2's reading decoders make of the body, read up to one byte past the limit.
fn reference(encoding: &str, body: &[u8]) -> Option<Result<Vec<u8>, ()>> {
    let mut out = Vec::new();
    let limit = MAX_BATCH_BYTES as u64 + 1;
    let read = match encoding.trim().to_ascii_lowercase().as_str() {
        "gzip" => GzDecoder::new(body).take(limit).read_to_end(&mut out),
        "deflate" => ZlibDecoder::new(body).take(limit).read_to_end(&mut out),
        _ => return None,
    };
    Some(read.map(|_| out).map_err(|_| ()))
}

fuzz_target!(|input: &[u8]| {
    let [options, chunking, rest @ ..] = input else {
        return;
    };
    let encoding = ENCODINGS[usize::from(options & 0b111)];
    let content_type = CONTENT_TYPES[usize::from((options >> 3) & 0b11)];
    let compress_here = options & 0b0010_0000 != 0;
    let single = options & 0b0100_0000 != 0;

    let compressed;
    let body = if compress_here && encoding.trim().eq_ignore_ascii_case("gzip") {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        let _ = encoder.write_all(rest);
        compressed = encoder.finish().unwrap_or_default();
        &compressed[..]
    } else {
        rest
    };

    // Chunked as the wire might deliver it, with the memory it takes measured.
    let chunk = usize::from(*chunking).max(1) * 61;
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let chunked = {
        let mut decoder = BodyDecoder::new(&headers(encoding, content_type));
        body.chunks(chunk)
            .try_for_each(|piece| decoder.push(piece))
            .and_then(|()| decoder.finish())
    };
    let used = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    assert!(
        used <= MEMORY_BOUND,
        "decoding a {}-byte body allocated {used} bytes",
        body.len()
    );
    let chunked = outcome(chunked);

    let whole = outcome(decode_body(&headers(encoding, content_type), body));
    assert_eq!(
        chunked, whole,
        "the answer depends on how the body is chunked"
    );
    let plain = outcome(decode_body(&headers(encoding, ""), body));
    assert_eq!(whole, plain, "the answer depends on the content type");

    match (reference(encoding, body), &whole) {
        (None, Outcome::Body(bytes)) => assert_eq!(bytes, body, "an unencoded body changed"),
        (None, Outcome::TooLarge) => assert!(body.len() > MAX_BATCH_BYTES, "refused early"),
        (None, Outcome::Unreadable) => panic!("an unencoded body was unreadable"),
        (Some(Ok(expected)), Outcome::Body(bytes)) => {
            assert_eq!(bytes, &expected, "inflated differently from flate2");
        }
        (Some(expected), Outcome::TooLarge) => assert!(
            expected.is_ok_and(|bytes| bytes.len() > MAX_BATCH_BYTES),
            "refused as too large below the limit"
        ),
        (Some(Ok(expected)), Outcome::Unreadable) => assert!(
            expected.len() <= MAX_BATCH_BYTES,
            "a body over the limit was called unreadable"
        ),
        (Some(Err(())), Outcome::Body(_)) => panic!("a corrupt body was accepted"),
        (Some(Err(())), Outcome::Unreadable) => {}
    }
    if let Outcome::Body(bytes) = &whole {
        assert!(
            bytes.len() <= MAX_BATCH_BYTES,
            "a body over the limit was accepted"
        );
    }

    let Outcome::Body(bytes) = whole else {
        return;
    };
    if single {
        let kind = SINGLE_KINDS[usize::from(*chunking) % SINGLE_KINDS.len()];
        match decode_single(&bytes, kind) {
            Ok(envelope) => check_envelope(&envelope, Some(kind)),
            Err(error) => check_code(error.code(), &error.to_string()),
        }
    } else {
        match decode_batch(&bytes) {
            Ok(envelope) => check_envelope(&envelope, None),
            Err(error) => check_code(error.code(), &error.to_string()),
        }
    }
});
