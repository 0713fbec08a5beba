//! Action identity (SPEC §4.1).
//!
//! An action id is a 64-bit value derived from
//! `blake3("weir.action.v1" ‖ parent ‖ task ‖ inputs_hash ‖ seq ‖ group)` where
//! - `parent` is the id of the action whose code made the call,
//! - `task` is the task's full name (`<env>.<function>`): not its code, so editing one task never
//!   renames the actions of another,
//! - `inputs_hash` is the blake3 hash of the canonical MessagePack inputs,
//! - `seq` counts earlier *identical* calls (same task, inputs and group) made by the same parent
//!   attempt, so identical calls get distinct ids while the ids do not depend on the order in
//!   which different calls complete or are polled,
//! - `group` is the call's group name (e.g. `"double_map"` for the children of a `map`).
//!
//! Because a retried parent recomputes the same ids for the same calls, a retry or a crash
//! recovery finds its children again instead of multiplying them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The id of an action inside a run. The root action of every run is [`ActionId::ROOT`] (`a0`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActionId(pub u64);

impl ActionId {
    /// The root action of a run, shown as `a0`.
    pub const ROOT: ActionId = ActionId(0);

    /// Derives a child's id. See the module docs for the recipe.
    pub fn derive(parent: ActionId, key: &CallKey<'_>) -> ActionId {
        let mut h = blake3::Hasher::new();
        h.update(b"weir.action.v1\0");
        h.update(&parent.0.to_le_bytes());
        h.update(key.task.as_bytes());
        h.update(b"\0");
        h.update(&key.inputs_hash);
        h.update(&key.seq.to_le_bytes());
        h.update(key.group.unwrap_or("").as_bytes());
        let bytes = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&bytes.as_bytes()[..8]);
        // 0 is reserved for the root; SQLite stores i64, so the top bit is cleared.
        let id = u64::from_le_bytes(first) & (i64::MAX as u64);
        ActionId(if id == 0 { 1 } else { id })
    }

    /// The value as stored in SQL (`INTEGER`).
    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }

    /// Parses the display form (`a0` or 16 hex digits).
    pub fn parse(s: &str) -> Option<ActionId> {
        if s == "a0" {
            return Some(ActionId::ROOT);
        }
        if s.len() != 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(ActionId)
    }
}

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            f.write_str("a0")
        } else {
            write!(f, "{:016x}", self.0)
        }
    }
}

impl fmt::Debug for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What identifies one call made by a parent: everything but the parent id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallKey<'a> {
    /// Full task name, `<env>.<function>`.
    pub task: &'a str,
    /// blake3 of the canonical inputs.
    pub inputs_hash: [u8; 32],
    /// Number of earlier identical calls by the same parent attempt.
    pub seq: u32,
    /// Group name, if the call belongs to one.
    pub group: Option<&'a str>,
}

/// Hash of canonical input bytes, as used in [`CallKey::inputs_hash`] and cache keys.
pub fn inputs_hash(canonical: &[u8]) -> [u8; 32] {
    *blake3::hash(canonical).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key<'a>(task: &'a str, inputs: &[u8], seq: u32, group: Option<&'a str>) -> CallKey<'a> {
        CallKey {
            task,
            inputs_hash: inputs_hash(inputs),
            seq,
            group,
        }
    }

    #[test]
    fn display_round_trips_and_root_is_a0() {
        assert_eq!(ActionId::ROOT.to_string(), "a0");
        assert_eq!(ActionId::parse("a0"), Some(ActionId::ROOT));
        let id = ActionId::derive(ActionId::ROOT, &key("env.t", b"x", 0, None));
        assert_eq!(ActionId::parse(&id.to_string()), Some(id));
        assert_eq!(ActionId::parse("zz"), None);
        assert!(id.as_i64() > 0);
    }

    proptest! {
        #[test]
        fn derivation_is_deterministic_and_separates_every_field(
            parent in any::<u64>(),
            task in "[a-z]{1,8}\\.[a-z]{1,8}",
            inputs in proptest::collection::vec(any::<u8>(), 0..64),
            seq in 0u32..1000,
            group in proptest::option::of("[a-z_]{1,10}"),
        ) {
            let p = ActionId(parent & (i64::MAX as u64));
            let k = key(&task, &inputs, seq, group.as_deref());
            let id = ActionId::derive(p, &k);
            prop_assert_eq!(id, ActionId::derive(p, &k));
            prop_assert_ne!(id, ActionId::ROOT);
            // every component changes the id
            prop_assert_ne!(id, ActionId::derive(ActionId(p.0 ^ 1), &k));
            prop_assert_ne!(id, ActionId::derive(p, &CallKey { seq: seq + 1, ..k }));
            prop_assert_ne!(id, ActionId::derive(p, &CallKey { task: &format!("{task}x"), ..k }));
            let mut other = inputs.clone();
            other.push(0);
            prop_assert_ne!(id, ActionId::derive(p, &CallKey { inputs_hash: inputs_hash(&other), ..k }));
            let g2 = format!("{}g", group.clone().unwrap_or_default());
            prop_assert_ne!(id, ActionId::derive(p, &CallKey { group: Some(&g2), ..k }));
        }
    }
}
