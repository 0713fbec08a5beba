//! Scratch runner for the harness module w5 (temporary).
#[path = "../../weir-bench/src/w5.rs"]
mod w5;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let b_runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut rates = Vec::new();
    for _ in 0..runs {
        let a = w5::w5a(200_000).await;
        rates.push(a.records_per_s);
        eprintln!(
            "w5a {:.4}s {:.0}/s avg {:.1} batches {} records {}",
            a.seconds, a.records_per_s, a.avg_batch_size, a.batches, a.records
        );
    }
    rates.sort_by(f64::total_cmp);
    if !rates.is_empty() {
        println!("w5a median {:.0}/s", rates[rates.len() / 2]);
    }
    for _ in 0..b_runs {
        let b = w5::w5b(20_000).await;
        println!(
            "w5b {:.3}s util {:.4} batches {} avg {:.1} records {}",
            b.seconds, b.utilization, b.batches, b.avg_batch_size, b.records
        );
    }
}
