//! Writes the seed corpus of every fuzz target: `cargo run -p weir-fuzz --example write_seeds
//! -- fuzz/seeds` (one folder per target, one file per seed, named by its hash).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    for (target, _) in weir_fuzz::TARGETS {
        let dir = root.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let seeds = weir_fuzz::seeds::seeds(target);
        for seed in &seeds {
            let name = weir_core::payload::content_hash(seed);
            std::fs::write(dir.join(&name[..16.min(name.len())]), seed)?;
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}
