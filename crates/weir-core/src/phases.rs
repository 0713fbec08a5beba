//! Where an attempt's time went (SPEC §9.3): the phases of the overhead model — every task call
//! costs uploads and downloads of its inputs and output, a queue wait and a start on top of its
//! run time — measured per attempt and kept with the action.
//!
//! Stored as a few bytes (one LEB128 varint of microseconds per phase, in [`Phases::NAMES`]
//! order), so recording them costs the engine a few clock reads per action.

use serde::{Deserialize, Serialize};

/// Microseconds spent in each phase of one attempt. A phase a mode does not have (no input
/// upload for a run's root, no process start in process) is 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phases {
    /// Encoding and storing the inputs (inline or to the object store) before queueing.
    pub upload: u64,
    /// Waiting in the queue: for a slot of the environment and the run, or for a worker.
    pub queue: u64,
    /// From the slot or lease to the task's code: lease delivery, process start.
    pub start: u64,
    /// Reading and decoding the inputs.
    pub download: u64,
    /// The task's own code.
    pub exec: u64,
    /// Encoding and storing the output.
    pub output: u64,
    /// From the stored output to the parent (or caller) told: the durable commit of the result.
    /// [`Phases::NOT_RECORDED`] where it was not written (it takes a write of its own after
    /// that commit: see [`Phases::sampled`]).
    pub deliver: u64,
}

impl Phases {
    /// The phases' names, in order.
    pub const NAMES: [&'static str; 7] = [
        "upload", "queue", "start", "download", "exec", "output", "deliver",
    ];

    /// A `deliver` that was not recorded.
    pub const NOT_RECORDED: u64 = u64::MAX;

    /// Whether the `deliver` of a run's `n`th finished action (from 1) is written: each of the
    /// first 1 000, then one in 64 (each costs a write of its own, after the result's commit).
    pub fn sampled(n: u64) -> bool {
        n <= 1_000 || n.is_multiple_of(64)
    }

    /// The values in [`Phases::NAMES`] order, `None` for a phase not recorded.
    pub fn recorded(&self) -> [Option<u64>; 7] {
        self.values()
            .map(|v| (v != Self::NOT_RECORDED).then_some(v))
    }

    /// The values in [`Phases::NAMES`] order.
    pub fn values(&self) -> [u64; 7] {
        [
            self.upload,
            self.queue,
            self.start,
            self.download,
            self.exec,
            self.output,
            self.deliver,
        ]
    }

    /// From values in [`Phases::NAMES`] order.
    pub fn from_values(v: [u64; 7]) -> Phases {
        Phases {
            upload: v[0],
            queue: v[1],
            start: v[2],
            download: v[3],
            exec: v[4],
            output: v[5],
            deliver: v[6],
        }
    }

    /// `{"upload_us": …, …, "deliver_us": …}`, `null` for a phase not recorded (the CLI's and
    /// the web UI's form).
    pub fn to_json(&self) -> serde_json::Value {
        let m: serde_json::Map<String, serde_json::Value> = Self::NAMES
            .iter()
            .zip(self.recorded())
            .map(|(n, v)| (format!("{n}_us"), v.into()))
            .collect();
        serde_json::Value::Object(m)
    }

    /// Every phase but `exec`: what the orchestration cost this attempt.
    pub fn overhead(&self) -> u64 {
        let v = self.recorded().map(|v| v.unwrap_or(0));
        [v[0], v[1], v[2], v[3], v[5], v[6]]
            .into_iter()
            .fold(0, u64::saturating_add)
    }

    /// The stored form: one LEB128 varint per phase (six when `deliver` was not recorded).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10);
        let n = if self.deliver == Self::NOT_RECORDED {
            6
        } else {
            7
        };
        for mut v in self.values().into_iter().take(n) {
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
        out
    }

    /// The stored form read back (`None` when it is not one).
    pub fn decode(bytes: &[u8]) -> Option<Phases> {
        let mut values = [0u64; 7];
        values[6] = Self::NOT_RECORDED;
        let mut at = 0;
        for (i, slot) in values.iter_mut().enumerate() {
            if i == 6 && at == bytes.len() {
                break;
            }
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let b = *bytes.get(at)?;
                at += 1;
                if shift > 63 {
                    return None;
                }
                v |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            *slot = v;
        }
        (at == bytes.len()).then(|| Phases::from_values(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_one() {
        let p = Phases {
            upload: 0,
            queue: 127,
            start: 128,
            download: 3,
            exec: u64::MAX,
            output: 1 << 40,
            deliver: 300,
        };
        let bytes = p.encode();
        assert_eq!(Phases::decode(&bytes), Some(p));
        assert_eq!(Phases::default().encode(), vec![0; 7]);
        assert_eq!(Phases::decode(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Phases::decode(&longer), None);
        assert_eq!(p.overhead(), 127 + 128 + 3 + (1 << 40) + 300);
        let unsent = Phases {
            deliver: Phases::NOT_RECORDED,
            ..p
        };
        assert_eq!(unsent.encode().len(), bytes.len() - 2);
        assert_eq!(Phases::decode(&unsent.encode()), Some(unsent));
        assert_eq!(unsent.recorded()[6], None);
        assert_eq!(unsent.overhead(), 127 + 128 + 3 + (1 << 40));
        assert!(Phases::sampled(1000) && !Phases::sampled(1001) && Phases::sampled(1024));
    }
}
