//! Cache keys (SPEC §6.1).
//!
//! The recipe, version `weir.cache.v1`:
//!
//! ```text
//! inputs_hash    = blake3(canonical inputs with every ignored input removed from the top-level map)
//! interface_hash = blake3(the task's parameter names and types and its output type, as written)
//! config_hash    = blake3(environment name ‖ sorted ignored input names ‖ salt)
//! key            = blake3("weir.cache.v1" ‖ task full name ‖ inputs_hash ‖ interface_hash
//!                          ‖ config_hash ‖ cache version)
//! ```
//!
//! where the cache version is the explicit `override` string, or for `auto` the hash of the
//! task function's own tokens (so whitespace and comments do not change it, code does, and one
//! task's code never changes another task's version). Every field is length-prefixed so that no
//! two different field lists hash the same bytes.

use crate::codec;

/// What a cache key is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKeyParts<'a> {
    /// Task full name, `<env>.<function>`.
    pub task: &'a str,
    /// Environment name.
    pub env: &'a str,
    /// Canonical input bytes (a map `{param: value}`).
    pub inputs: &'a [u8],
    /// Parameters left out of the key.
    pub ignored_inputs: &'a [&'a str],
    /// The interface: parameter names and types, output type.
    pub interface: &'a str,
    /// Salt mixed into the key.
    pub salt: &'a str,
    /// The cache version (override string, or the source hash for `auto`).
    pub version: &'a str,
}

fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Hash of canonical inputs with the ignored top-level parameters removed.
pub fn inputs_hash_without(inputs: &[u8], ignored: &[&str]) -> Result<[u8; 32], codec::Error> {
    if ignored.is_empty() {
        return Ok(*blake3::hash(inputs).as_bytes());
    }
    let mut value = rmpv::decode::read_value(&mut &inputs[..])
        .map_err(|e| codec::Error::Decode(e.to_string()))?;
    if let rmpv::Value::Map(entries) = &mut value {
        entries.retain(|(k, _)| !k.as_str().is_some_and(|k| ignored.contains(&k)));
    }
    let mut out = Vec::with_capacity(inputs.len());
    rmpv::encode::write_value(&mut out, &value).map_err(|e| codec::Error::Encode(e.to_string()))?;
    Ok(*blake3::hash(&out).as_bytes())
}

/// Derives the cache key (hex) from its parts. See the module docs for the recipe.
pub fn cache_key(parts: &CacheKeyParts<'_>) -> Result<String, codec::Error> {
    let inputs = inputs_hash_without(parts.inputs, parts.ignored_inputs)?;
    let interface = blake3::hash(parts.interface.as_bytes());
    let mut config = blake3::Hasher::new();
    field(&mut config, parts.env.as_bytes());
    let mut ignored: Vec<&str> = parts.ignored_inputs.to_vec();
    ignored.sort_unstable();
    for name in ignored {
        field(&mut config, name.as_bytes());
    }
    field(&mut config, parts.salt.as_bytes());
    let config = config.finalize();
    let mut h = blake3::Hasher::new();
    field(&mut h, b"weir.cache.v1");
    field(&mut h, parts.task.as_bytes());
    field(&mut h, &inputs);
    field(&mut h, interface.as_bytes());
    field(&mut h, config.as_bytes());
    field(&mut h, parts.version.as_bytes());
    Ok(h.finalize().to_hex()[..32].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Serialize;

    #[derive(Serialize)]
    struct Args {
        x: u64,
        run_label: String,
    }

    fn parts<'a>(inputs: &'a [u8], ignored: &'a [&'a str]) -> CacheKeyParts<'a> {
        CacheKeyParts {
            task: "env.t",
            env: "env",
            inputs,
            ignored_inputs: ignored,
            interface: "x: u64 -> u64",
            salt: "",
            version: "v1",
        }
    }

    proptest! {
        #[test]
        fn ignored_inputs_do_not_matter_and_everything_else_does(x in any::<u64>(), a in "[a-z]{0,8}", b in "[a-z]{0,8}") {
            let i1 = codec::encode(&Args { x, run_label: a.clone() }).unwrap();
            let i2 = codec::encode(&Args { x, run_label: format!("{b}!") }).unwrap();
            let ignored = ["run_label"];
            let k1 = cache_key(&parts(&i1, &ignored)).unwrap();
            prop_assert_eq!(&k1, &cache_key(&parts(&i2, &ignored)).unwrap());
            prop_assert_ne!(&k1, &cache_key(&parts(&i1, &[])).unwrap());
            prop_assert_ne!(&cache_key(&parts(&i1, &[])).unwrap(), &cache_key(&parts(&i2, &[])).unwrap());
            let i3 = codec::encode(&Args { x: x.wrapping_add(1), run_label: a }).unwrap();
            prop_assert_ne!(&k1, &cache_key(&parts(&i3, &ignored)).unwrap());
            for changed in [
                CacheKeyParts { version: "v2", ..parts(&i1, &ignored) },
                CacheKeyParts { salt: "s", ..parts(&i1, &ignored) },
                CacheKeyParts { task: "env.u", ..parts(&i1, &ignored) },
                CacheKeyParts { env: "other", ..parts(&i1, &ignored) },
                CacheKeyParts { interface: "x: u32 -> u64", ..parts(&i1, &ignored) },
            ] {
                prop_assert_ne!(&k1, &cache_key(&changed).unwrap());
            }
        }
    }
}
