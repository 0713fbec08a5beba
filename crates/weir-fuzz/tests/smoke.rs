//! CI's smoke of the fuzz targets: each harness on its seeds and on `WEIR_FUZZ_SMOKE_RUNS`
//! (default 3000) deterministic mutations of them. The long runs are `cargo fuzz` (see
//! `fuzz/README.md`); this catches a harness or a decoder broken by a change in minutes.

use weir_fuzz::seeds::{MSGPACK_TOKENS, seeds};

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TEXT_TOKENS: &[&[u8]] = &[
    b"\n",
    b"?",
    b"&",
    b"=",
    b"%",
    b"%ff",
    b"%00",
    b"/",
    b"..",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"null",
    b"-",
    b"0",
    b"1e999",
    b"18446744073709551616",
    b"\\u0000",
    b"\xc3\xa9",
    b"offset",
    b"limit",
    b"status",
    b"buckets",
    b"name",
    b"a0",
];

/// One to four mutations of a seed: bit flips, interesting bytes, insertions, deletions,
/// duplicated or truncated spans, splices with another seed, tokens.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(8) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = [0x00, 0x7f, 0x80, 0xff, 0xc0, 0xc1, 0x90, 0x80, 0xa0][rng.below(9)];
            }
            2 => data.insert(at, rng.next() as u8),
            3 if !data.is_empty() => {
                let n = 1 + rng.below(8.min(data.len()));
                let at = rng.below(data.len() - n + 1);
                data.drain(at..at + n);
            }
            4 if !data.is_empty() => {
                let from = rng.below(data.len());
                let n = 1 + rng.below(data.len() - from);
                let span = data[from..from + n].to_vec();
                data.splice(at..at, span);
            }
            5 => data.truncate(at),
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ => {
                let tokens = if rng.below(2) == 0 {
                    MSGPACK_TOKENS
                } else {
                    TEXT_TOKENS
                };
                data.splice(at..at, tokens[rng.below(tokens.len())].iter().copied());
            }
        }
    }
    data
}

fn smoke(target: &str) {
    let (_, harness) = weir_fuzz::TARGETS
        .into_iter()
        .find(|(name, _)| *name == target)
        .expect("a target");
    let seeds = seeds(target);
    assert!(!seeds.is_empty());
    for seed in &seeds {
        harness(seed);
    }
    let runs: usize = std::env::var("WEIR_FUZZ_SMOKE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    for _ in 0..runs {
        let input = mutate(&mut rng, &seeds);
        harness(&input);
    }
}

/// The harnesses run on a thread with the stack of a libFuzzer process's main thread, as
/// deep (1024-level) nesting in debug builds needs more than a test thread's 2 MiB.
fn on_big_stack(target: &'static str) {
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || smoke(target))
        .expect("a thread")
        .join()
        .unwrap_or_else(|_| panic!("the {target} smoke failed"));
}

#[test]
fn codec_decode() {
    on_big_stack("codec_decode");
}

#[test]
fn protocol_messages() {
    on_big_stack("protocol_messages");
}

#[test]
fn ui_params() {
    on_big_stack("ui_params");
}

#[test]
fn cli_input() {
    on_big_stack("cli_input");
}
