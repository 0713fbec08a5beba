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
    pub deliver: u64,
}

impl Phases {
    /// The phases' names, in order.
    pub const NAMES: [&'static str; 7] = [
        "upload", "queue", "start", "download", "exec", "output", "deliver",
    ];

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

    /// Every phase but `exec`: what the orchestration cost this attempt.
    pub fn overhead(&self) -> u64 {
        let v = self.values();
        [v[0], v[1], v[2], v[3], v[5], v[6]]
            .into_iter()
            .fold(0, u64::saturating_add)
    }

    /// The stored form: one LEB128 varint per phase.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10);
        for mut v in self.values() {
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
        let mut at = 0;
        for slot in &mut values {
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
            deliver: 45,
        };
        let bytes = p.encode();
        assert_eq!(Phases::decode(&bytes), Some(p));
        assert_eq!(Phases::default().encode(), vec![0; 7]);
        assert_eq!(Phases::decode(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Phases::decode(&longer), None);
        assert_eq!(p.overhead(), 127 + 128 + 3 + (1 << 40) + 45);
    }
}
