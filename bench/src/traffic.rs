//! The traffic both measurements share: `/v1/batch` bodies of a shop's visitors.
//!
//! A fixed population of users browses a shop: about 10 % `identify`, 45 % `track` and 45 %
//! `page` messages, each with the context Ebb's SDK sends (library, page, consent) and
//! properties of a few hundred bytes. A quarter of the users never sign in and send with an
//! anonymous id only. Every message id is unique, so nothing is skipped as a duplicate.
//!
//! The choice of user and type is a hash of the message's sequence number, so concurrent
//! senders share no random state and every run sends the same mix.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{SecondsFormat, Utc};

const EVENTS: [&str; 5] = [
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Coupon Applied",
];
const CATEGORIES: [&str; 4] = ["shoes", "jackets", "backpacks", "tents"];
const PLANS: [&str; 3] = ["free", "plus", "pro"];

/// Makes batch bodies with unique message ids.
#[derive(Debug)]
pub struct Traffic {
    /// Prefix of every message id, unique per run.
    run: String,
    /// How many distinct users send.
    users: u64,
    /// Sequence number of the next message.
    next: AtomicU64,
}

impl Traffic {
    /// Traffic from `users` distinct users.
    pub fn new(users: u64) -> Self {
        Self {
            run: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            users: users.max(1),
            next: AtomicU64::new(0),
        }
    }

    /// How many distinct users send: user `n` has the anonymous id `anon-{n:06}` and,
    /// unless `n` is a multiple of 4, the user id `user-{n:06}`.
    pub fn users(&self) -> u64 {
        self.users
    }

    /// One `/v1/batch` body of `size` messages, stamped with the current time.
    pub fn batch(&self, size: usize) -> String {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let first = self.next.fetch_add(size as u64, Ordering::Relaxed);
        let mut body = String::with_capacity(size * 600 + 64);

        body.push_str("{\"batch\":[");
        for seq in first..first + size as u64 {
            if seq != first {
                body.push(',');
            }
            self.message(&mut body, seq, &now);
        }
        // Writing into a String cannot fail.
        let _ = write!(body, "],\"sentAt\":\"{now}\"}}");
        body
    }

    fn message(&self, out: &mut String, seq: u64, now: &str) {
        let hash = mix(seq);
        let user = hash % self.users;
        let roll = (hash >> 32) % 100;
        let product = (hash >> 12) % 500;
        let identified = user % 4 != 0;
        let kind = match roll {
            0..10 if identified => "identify",
            0..55 => "track",
            _ => "page",
        };

        // Writing into a String cannot fail.
        let _ = write!(
            out,
            "{{\"type\":\"{kind}\",\"messageId\":\"{run}-{seq}\",\"anonymousId\":\"anon-{user:06}\",",
            run = self.run
        );
        if identified {
            let _ = write!(out, "\"userId\":\"user-{user:06}\",");
        }
        let _ = write!(out, "\"timestamp\":\"{now}\",");
        match kind {
            "identify" => {
                let _ = write!(
                    out,
                    "\"traits\":{{\"email\":\"user-{user:06}@example.com\",\
                     \"name\":\"Customer {user}\",\"plan\":\"{plan}\",\
                     \"company\":\"Outdoor Co {company}\",\"newsletter\":{newsletter}}},",
                    plan = PLANS[(hash >> 20) as usize % PLANS.len()],
                    company = user % 97,
                    newsletter = hash & 1 == 0,
                );
            }
            "track" => {
                let _ = write!(
                    out,
                    "\"event\":\"{event}\",\"properties\":{{\"productId\":\"sku-{product:05}\",\
                     \"name\":\"Trail item {product}\",\"category\":\"{category}\",\
                     \"price\":{euros}.{cents:02},\"currency\":\"EUR\",\"quantity\":{quantity}}},",
                    event = EVENTS[(hash >> 24) as usize % EVENTS.len()],
                    category = CATEGORIES[product as usize % CATEGORIES.len()],
                    euros = 10 + product % 190,
                    cents = (hash >> 40) % 100,
                    quantity = 1 + (hash >> 44) % 3,
                );
            }
            _ => {
                let _ = write!(
                    out,
                    "\"name\":\"Product\",\"properties\":{{\"path\":\"/products/sku-{product:05}\",\
                     \"search\":\"\",\"referrer\":\"https://search.example/?q=trail\"}},"
                );
            }
        }
        let _ = write!(
            out,
            "\"context\":{{\"library\":{{\"name\":\"ebb-sdk\",\"version\":\"0.1.0\"}},\
             \"page\":{{\"path\":\"/products/sku-{product:05}\",\
             \"url\":\"https://shop.example/products/sku-{product:05}\",\
             \"title\":\"Trail item {product}\"}},\
             \"consent\":{{\"categoryPreferences\":{{\"analytics\":true,\"ads\":{ads},\
             \"surveys\":true}}}},\"locale\":\"de-DE\"}}}}",
            ads = user % 3 == 0,
        );
    }
}

/// SplitMix64's finaliser: spreads consecutive sequence numbers over all 64 bits.
fn mix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_decodes_and_has_a_unique_id() {
        let traffic = Traffic::new(100);

        let bodies: Vec<String> = (0..50).map(|_| traffic.batch(20)).collect();

        let mut ids = std::collections::HashSet::new();
        for body in &bodies {
            let envelope = ebb_protocol::decode::decode_batch(body.as_bytes()).unwrap();
            assert_eq!(envelope.items.len(), 20);
            for index in 0..envelope.items.len() {
                let message = envelope.message(index).unwrap();
                assert!(ids.insert(message.message_id.unwrap().into_inner()));
            }
        }
    }

    #[test]
    fn messages_are_a_few_hundred_bytes() {
        let traffic = Traffic::new(100);

        let body = traffic.batch(1_000);

        let average = body.len() / 1_000;
        assert!(
            (300..=700).contains(&average),
            "{average} bytes per message"
        );
    }
}
