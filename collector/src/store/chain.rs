//! The audit chain: how an entry's hash is computed, and how a chain is checked.
//!
//! Each entry's hash covers its own fields and the hash of the entry before it, so that
//! removing, reordering or editing any entry breaks every link after it. The first entry
//! links to [`GENESIS`]. Fields are hashed in a fixed order, each prefixed by its length,
//! so that no two different entries can hash the same text.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Its position in the chain, from 1.
    pub seq: i64,
    /// The environment acted on, if the action concerns one.
    pub environment_id: Option<String>,
    /// When it happened (to the microsecond, as stored).
    pub at: DateTime<Utc>,
    /// Who asked: an admin token's id and label, or the background job.
    pub actor: String,
    /// What was done, such as `delete_user`.
    pub action: String,
    /// What was asked, without personal data (ids only as keyed hashes).
    pub request: Value,
    /// What was removed or changed, as counts per table.
    pub counts: Value,
    /// The hash of the entry before.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// The outcome of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainCheck {
    /// Whether every entry is intact and linked to the one before.
    pub valid: bool,
    /// How many entries were checked.
    pub entries: u64,
    /// The first entry whose hash or link does not hold.
    pub first_broken: Option<i64>,
}

/// The hash of an entry with these fields.
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    prev_hash: &str,
    seq: i64,
    environment_id: Option<&str>,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    request: &Value,
    counts: &Value,
) -> String {
    let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let fields = [
        prev_hash.to_owned(),
        seq.to_string(),
        environment_id.unwrap_or("").to_owned(),
        at,
        actor.to_owned(),
        action.to_owned(),
        request.to_string(),
        counts.to_string(),
    ];
    let mut hasher = Sha256::new();
    for field in fields {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Checks entries given in `seq` order: consecutive numbers, links, and hashes.
pub fn verify(entries: &[AuditEntry]) -> ChainCheck {
    let mut previous = GENESIS.to_owned();
    for (index, entry) in entries.iter().enumerate() {
        let expected_seq = i64::try_from(index).unwrap_or(i64::MAX) + 1;
        let hash = entry_hash(
            &entry.prev_hash,
            entry.seq,
            entry.environment_id.as_deref(),
            entry.at,
            &entry.actor,
            &entry.action,
            &entry.request,
            &entry.counts,
        );
        if entry.seq != expected_seq || entry.prev_hash != previous || entry.hash != hash {
            return ChainCheck {
                valid: false,
                entries: entries.len() as u64,
                first_broken: Some(entry.seq),
            };
        }
        previous = hash;
    }
    ChainCheck {
        valid: true,
        entries: entries.len() as u64,
        first_broken: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chain(length: i64) -> Vec<AuditEntry> {
        let mut entries: Vec<AuditEntry> = Vec::new();
        for seq in 1..=length {
            let prev_hash = entries
                .last()
                .map_or(GENESIS.to_owned(), |e| e.hash.clone());
            let at = DateTime::from_timestamp(1_700_000_000 + seq, 0).unwrap();
            let (request, counts) = (json!({"n": seq}), json!({"users": 1}));
            let hash = entry_hash(
                &prev_hash,
                seq,
                Some("env"),
                at,
                "t",
                "delete_user",
                &request,
                &counts,
            );
            entries.push(AuditEntry {
                seq,
                environment_id: Some("env".into()),
                at,
                actor: "t".into(),
                action: "delete_user".into(),
                request,
                counts,
                prev_hash,
                hash,
            });
        }
        entries
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(
            verify(&chain(5)),
            ChainCheck {
                valid: true,
                entries: 5,
                first_broken: None
            }
        );
    }

    #[test]
    fn an_edited_entry_is_the_first_broken_link() {
        let mut entries = chain(5);
        entries[2].counts = json!({"users": 0});

        assert_eq!(verify(&entries).first_broken, Some(3));
    }

    #[test]
    fn a_removed_entry_breaks_the_chain_where_it_was() {
        let mut entries = chain(5);
        entries.remove(1);

        assert_eq!(verify(&entries).first_broken, Some(3));
    }

    #[test]
    fn a_rehashed_edit_still_breaks_the_next_link() {
        let mut entries = chain(5);
        let edited = &mut entries[1];
        edited.action = "nothing_happened".into();
        edited.hash = entry_hash(
            &edited.prev_hash,
            edited.seq,
            edited.environment_id.as_deref(),
            edited.at,
            &edited.actor,
            &edited.action,
            &edited.request,
            &edited.counts,
        );

        assert_eq!(verify(&entries).first_broken, Some(3));
    }
}
