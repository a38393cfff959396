//! Reading a Tracking API request body: decompression, bounded by the batch limit.
//!
//! The body is inflated as its `Content-Encoding` says (`gzip`, `deflate`, or none) and
//! refused once it grows past [`MAX_BATCH_BYTES`]. The limit applies to the decompressed
//! size and is enforced while inflating, so a small compressed body can neither exceed it
//! nor make the collector allocate more than the limit on the way to refusing it.
//!
//! The content type is not consulted: clients send the same JSON as `application/json`,
//! as `text/plain` (`navigator.sendBeacon`, and requests that avoid a CORS preflight) or
//! as `application/x-www-form-urlencoded`, and every one of them is read as JSON by
//! [`ebb_protocol::decode`].

use std::fmt;
use std::io::{self, Write};

use actix_web::http::header::{ContentEncoding, HeaderMap, CONTENT_ENCODING};
use ebb_protocol::MAX_BATCH_BYTES;
use flate2::write::{GzDecoder, ZlibDecoder};

use crate::error::{ApiError, Result};

/// Decodes one request body from the chunks it arrives in.
///
/// Feed each chunk to [`push`](Self::push) in order, then call [`finish`](Self::finish)
/// for the bytes. An error from either is final: drop the decoder.
pub struct BodyDecoder {
    inflater: Inflater,
}

/// The decompressors keep writing into a bounded buffer, so that inflating stops at the
/// limit instead of first materialising a whole chunk's output.
enum Inflater {
    Identity(Bounded),
    Gzip(Box<GzDecoder<Bounded>>),
    Deflate(Box<ZlibDecoder<Bounded>>),
}

impl fmt::Debug for BodyDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let encoding = match self.inflater {
            Inflater::Identity(_) => "identity",
            Inflater::Gzip(_) => "gzip",
            Inflater::Deflate(_) => "deflate",
        };
        f.debug_struct("BodyDecoder")
            .field("encoding", &encoding)
            .finish_non_exhaustive()
    }
}

impl BodyDecoder {
    /// A decoder for a body with these request headers.
    ///
    /// `Content-Encoding` is read as actix-web reads it: one of `gzip` and `deflate`
    /// (ignoring case and surrounding spaces) inflates; anything else, a list of codings
    /// included, leaves the body as it came.
    pub fn new(headers: &HeaderMap) -> Self {
        let encoding = headers
            .get(CONTENT_ENCODING)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .unwrap_or(ContentEncoding::Identity);
        let out = Bounded::default();
        let inflater = match encoding {
            ContentEncoding::Gzip => Inflater::Gzip(Box::new(GzDecoder::new(out))),
            ContentEncoding::Deflate => Inflater::Deflate(Box::new(ZlibDecoder::new(out))),
            _ => Inflater::Identity(out),
        };
        Self { inflater }
    }

    /// Adds the next chunk of the body as it came over the wire.
    ///
    /// # Errors
    ///
    /// [`ApiError::PayloadTooLarge`] once the decoded body passes [`MAX_BATCH_BYTES`];
    /// [`ApiError::UnreadableBody`] when the compressed data is corrupt.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        let written = match &mut self.inflater {
            Inflater::Identity(out) => out.write_all(chunk),
            Inflater::Gzip(decoder) => decoder.write_all(chunk).and_then(|()| decoder.flush()),
            Inflater::Deflate(decoder) => decoder.write_all(chunk).and_then(|()| decoder.flush()),
        };
        written.map_err(|error| self.refusal(&error))
    }

    /// Ends the body and gives back its decoded bytes.
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push), also when the compressed data ends early.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        let finished = match &mut self.inflater {
            Inflater::Identity(_) => Ok(()),
            Inflater::Gzip(decoder) => decoder.try_finish(),
            Inflater::Deflate(decoder) => decoder.try_finish(),
        };
        finished.map_err(|error| self.refusal(&error))?;

        Ok(match self.inflater {
            Inflater::Identity(out) => out.bytes,
            Inflater::Gzip(mut decoder) => std::mem::take(&mut decoder.get_mut().bytes),
            Inflater::Deflate(mut decoder) => std::mem::take(&mut decoder.get_mut().bytes),
        })
    }

    fn out(&self) -> &Bounded {
        match &self.inflater {
            Inflater::Identity(out) => out,
            Inflater::Gzip(decoder) => decoder.get_ref(),
            Inflater::Deflate(decoder) => decoder.get_ref(),
        }
    }

    fn refusal(&self, error: &io::Error) -> ApiError {
        if self.out().over_limit {
            return ApiError::PayloadTooLarge {
                limit: MAX_BATCH_BYTES,
            };
        }
        tracing::debug!(error = %error, "unreadable body");
        ApiError::UnreadableBody("it ended early or its compression is corrupt".into())
    }
}

/// Decodes a body that is already whole, as [`BodyDecoder`] does chunk by chunk.
///
/// # Errors
///
/// As [`BodyDecoder::push`] and [`BodyDecoder::finish`].
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>> {
    let mut decoder = BodyDecoder::new(headers);
    decoder.push(body)?;
    decoder.finish()
}

/// The decoded body so far; a write that would take it past the limit fails and is kept
/// out.
#[derive(Default)]
struct Bounded {
    bytes: Vec<u8>,
    over_limit: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_BATCH_BYTES {
            self.over_limit = true;
            return Err(io::Error::other("the decoded body is over the limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use actix_web::http::header::{HeaderName, HeaderValue};
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use rstest::rstest;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    const JSON: &[u8] = br#"{"batch":[{"type":"track","userId":"u","event":"e"}]}"#;

    #[rstest]
    #[case::json("application/json")]
    #[case::beacon("text/plain;charset=UTF-8")]
    #[case::form("application/x-www-form-urlencoded")]
    fn every_content_type_is_read_as_it_came(#[case] content_type: &'static str) {
        let headers = headers(&[("content-type", content_type)]);

        let body = decode_body(&headers, JSON).unwrap();

        assert_eq!(body, JSON);
    }

    #[rstest]
    #[case::gzip("gzip", gzip(JSON))]
    #[case::gzip_in_capitals(" GZIP ", gzip(JSON))]
    #[case::deflate("deflate", zlib(JSON))]
    fn compressed_bodies_are_inflated(#[case] encoding: &'static str, #[case] body: Vec<u8>) {
        let headers = headers(&[("content-encoding", encoding)]);
        let mut decoder = BodyDecoder::new(&headers);

        for chunk in body.chunks(7) {
            decoder.push(chunk).unwrap();
        }

        assert_eq!(decoder.finish().unwrap(), JSON);
    }

    #[test]
    fn an_unknown_encoding_leaves_the_body_as_it_came() {
        let headers = headers(&[("content-encoding", "gzip, identity")]);

        assert_eq!(decode_body(&headers, JSON).unwrap(), JSON);
    }

    #[rstest]
    #[case::truncated(gzip(JSON)[..20].to_vec())]
    #[case::not_gzip(JSON.to_vec())]
    #[case::trailing_bytes([gzip(JSON), b"junk".to_vec()].concat())]
    fn corrupt_gzip_is_unreadable(#[case] body: Vec<u8>) {
        let headers = headers(&[("content-encoding", "gzip")]);

        let error = decode_body(&headers, &body).unwrap_err();

        assert!(matches!(error, ApiError::UnreadableBody(_)), "{error:?}");
    }

    #[test]
    fn the_limit_is_on_the_decoded_size() {
        let at_limit = vec![b' '; MAX_BATCH_BYTES];
        let over = vec![b' '; MAX_BATCH_BYTES + 1];
        let gzip_headers = headers(&[("content-encoding", "gzip")]);

        assert_eq!(
            decode_body(&HeaderMap::new(), &at_limit).unwrap().len(),
            MAX_BATCH_BYTES
        );
        assert_eq!(
            decode_body(&gzip_headers, &gzip(&at_limit)).unwrap().len(),
            MAX_BATCH_BYTES
        );
        for (headers, body) in [
            (HeaderMap::new(), over.clone()),
            (gzip_headers, gzip(&over)),
        ] {
            let error = decode_body(&headers, &body).unwrap_err();
            assert!(
                matches!(error, ApiError::PayloadTooLarge { .. }),
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused_without_inflating_past_the_limit() {
        // 64 KB on the wire that would inflate to about 64 MB in one chunk.
        let bomb = gzip(&vec![0; 64 * 1024 * 1024]);
        let mut decoder = BodyDecoder::new(&headers(&[("content-encoding", "gzip")]));

        let error = decoder.push(&bomb).unwrap_err();

        assert!(
            matches!(error, ApiError::PayloadTooLarge { .. }),
            "{error:?}"
        );
        assert!(decoder.out().bytes.capacity() <= 2 * MAX_BATCH_BYTES);
    }
}
