//! Criterion bench of the group-commit workload: for every store, every
//! durability mode and 1, 8, 64 and 256 producers, the time per durable
//! record (throughput in records per second). Each sample runs the shared
//! driver of `basalt_benches::group_commit` in a fresh task hub.
//!
//! `cargo bench -p basalt-benches --bench group_commit` runs it all (tens of
//! minutes on a small machine); `-- --test` runs each case once, quickly.

use std::time::Duration;

use basalt_benches::group_commit::{self, Mode, Store};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Producer counts of every (store, mode) pair.
const PRODUCERS: [usize; 4] = [1, 8, 64, 256];

fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot start the tokio runtime: {e}"));
    for store in Store::ALL {
        let mut group = c.benchmark_group(format!("group_commit/{}", store.slug()));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(1));
        for mode in Mode::ALL {
            for producers in PRODUCERS {
                let id = BenchmarkId::new(mode.slug(), producers);
                group.bench_with_input(id, &producers, |b, &producers| {
                    b.to_async(&runtime).iter_custom(|iters| async move {
                        group_commit::elapsed_for_iters(mode, store, producers, iters)
                            .await
                            .unwrap_or_else(|e| {
                                panic!("{store}, {mode}, {producers} producers: {e}")
                            })
                    });
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
