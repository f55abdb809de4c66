//! `apex-bench replay`: prioritized replay in-process, against cpprb
//! (scripts/bench-replay.sh).

use std::time::Duration;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ReplayBenchArgs {
    /// Items held, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000000,2000000")]
    items: Vec<usize>,
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

pub fn replay(a: ReplayBenchArgs) -> Result<()> {
    use apex_replay_server::frame::new_frame;
    use apex_replay_server::shard::Item;
    use apex_replay_server::store::{NewItem, Store, StoreConfig};
    use rand::{Rng, SeedableRng};

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let duration = Duration::from_secs_f64(a.seconds);
    for &n in &a.items {
        // One shard: this measures the sum tree and the bookkeeping against
        // cpprb's single buffer, not locking or copies.
        let store = Store::new(StoreConfig {
            capacity: n,
            shards: 1,
            alpha: 0.6,
            seed: 0,
        });
        let frame = new_frame(&[0u8; 4], store.ledger());
        for start in (0..n).step_by(10_000) {
            let items = (start..(start + 10_000).min(n))
                .map(|i| NewItem {
                    item: Item {
                        frames: vec![frame.clone(), frame.clone()].into(),
                        action: (i % 4) as u32,
                        reward: 0.0,
                        discount: 0.99,
                    },
                    priority: rng.gen_range(0.01..10.0),
                })
                .collect();
            store.insert(items);
        }
        let t = std::time::Instant::now();
        let mut batches = 0u64;
        while t.elapsed() < duration {
            std::hint::black_box(store.sample(a.batch, 0.4)?);
            batches += 1;
        }
        let sample_rate = batches as f64 / t.elapsed().as_secs_f64();
        let ids: Vec<Vec<u64>> = (0..64)
            .map(|_| (0..a.batch).map(|_| rng.gen_range(0..n as u64)).collect())
            .collect();
        let priorities: Vec<f32> = (0..a.batch).map(|_| rng.gen_range(0.01..10.0)).collect();
        let t = std::time::Instant::now();
        let mut updates = 0u64;
        while t.elapsed() < duration {
            store.update_priorities(&ids[updates as usize % ids.len()], &priorities);
            updates += 1;
        }
        let update_rate = updates as f64 / t.elapsed().as_secs_f64();
        println!("apex_sample_batches_per_sec items={n} {sample_rate:.0}");
        println!("apex_update_batches_per_sec items={n} {update_rate:.0}");
    }
    Ok(())
}
