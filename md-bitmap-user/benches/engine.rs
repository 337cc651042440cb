//! Engine ingest speed: start/end-write pairs of realistic patterns (sequential 512 KiB, random
//! 4 KiB, hot-set skewed 4 KiB) over 1 M chunks with daemon sweeps interleaved, against a bare
//! floor (plain counter increments and decrements over the same chunk sequence) in the same run.
//!
//! An "event" is one start-write or end-write call. Writes complete `QD` writes after they start
//! (a queue of depth 32), and the daemon runs every `SWEEP_EVERY` writes (one `daemon_sleep` of
//! simulated time apart). Each engine run starts from a freshly seeded bitmap. Two ways in:
//! * `engine`: one `start_write`/`end_write` call at a time (the live feed);
//! * `engine_unplug`: the same with `unplug()` after every start (trace replay), so every first
//!   write to a clean chunk also writes a bitmap page.
//!
//! Besides criterion's figures a summary line per pattern prints events/s of each, the floor,
//! the ratios, and the engine's heap bytes per chunk.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use md_bitmap::engine::{Bitmap, BitmapConfig, BitmapGeometry, KernelVariant};

const CHUNK_BYTES: u64 = 1 << 20; // 1 MiB bitmap chunks
const CHUNKS: u64 = 1 << 20; // 1 M chunks (a 1 TiB member)
const CHUNK_SECTORS: u64 = CHUNK_BYTES / 512;
const WRITES: usize = 1 << 20; // writes per pattern
const QD: usize = 32;
const SWEEP_EVERY: usize = 1 << 16;
const SLEEP: u64 = 1000;

/// splitmix64: a tiny deterministic PRNG (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// (offset, sectors) of each write.
type Pattern = Vec<(u64, u64)>;

/// 512 KiB sequential writes across the array (two per chunk), wrapping.
fn sequential() -> Pattern {
    let len = 1024;
    (0..WRITES as u64)
        .map(|i| ((i * len) % (CHUNKS * CHUNK_SECTORS), len))
        .collect()
}

/// 4 KiB writes at uniformly random 4 KiB-aligned offsets.
fn random_4k() -> Pattern {
    let mut r = Rng(1);
    let slots = CHUNKS * CHUNK_SECTORS / 8;
    (0..WRITES).map(|_| (r.below(slots) * 8, 8)).collect()
}

/// 4 KiB writes, 90 % of them to a hot 1 % of the chunks, the rest uniform.
fn hot_set() -> Pattern {
    let mut r = Rng(2);
    let hot = CHUNKS / 100;
    (0..WRITES)
        .map(|_| {
            let chunk = if r.below(10) < 9 {
                r.below(hot) * 97 % CHUNKS
            } else {
                r.below(CHUNKS)
            };
            (chunk * CHUNK_SECTORS + r.below(CHUNK_SECTORS / 8) * 8, 8)
        })
        .collect()
}

fn new_bitmap() -> Bitmap {
    let geo = BitmapGeometry::from_chunks(CHUNK_BYTES, CHUNKS).unwrap();
    let mut bm = Bitmap::new(geo, BitmapConfig::new(KernelVariant::V6_14, SLEEP), 0);
    bm.seed_from_disk(&[], 1, 1);
    bm
}

/// Feed the pattern one call at a time: start, (unplug), end `QD` writes later, daemon every
/// `SWEEP_EVERY` writes (one `daemon_sleep` of simulated time apart). Returns the number of
/// start/end events.
fn ingest(bm: &mut Bitmap, p: &Pattern, unplug: bool) -> u64 {
    let mut now = 0;
    for (i, &(off, len)) in p.iter().enumerate() {
        bm.start_write(off, len, false);
        if unplug {
            bm.unplug();
        }
        if i >= QD {
            let (o, l) = p[i - QD];
            bm.end_write(o, l, true, false, false);
        }
        if i % SWEEP_EVERY == SWEEP_EVERY - 1 {
            now += SLEEP;
            bm.daemon_work(now);
        }
    }
    for &(o, l) in &p[p.len() - QD..] {
        bm.end_write(o, l, true, false, false);
    }
    2 * p.len() as u64
}

/// The floor: the same chunk sequence as plain counter increments and decrements.
fn floor(counters: &mut [u16], p: &Pattern) -> u64 {
    let shift = CHUNK_SECTORS.trailing_zeros();
    let span = |off: u64, len: u64| (off >> shift) as usize..=((off + len - 1) >> shift) as usize;
    for (i, &(off, len)) in p.iter().enumerate() {
        for c in span(off, len) {
            counters[c] = counters[c].wrapping_add(1);
        }
        if i >= QD {
            let (o, l) = p[i - QD];
            for c in span(o, l) {
                counters[c] = counters[c].wrapping_sub(1);
            }
        }
    }
    for &(o, l) in &p[p.len() - QD..] {
        for c in span(o, l) {
            counters[c] = counters[c].wrapping_sub(1);
        }
    }
    2 * p.len() as u64
}

/// Events per second of `f`, best of at least 3 runs and `min` in total, each run on a fresh
/// state from `setup` (not timed).
fn rate<S>(mut setup: impl FnMut() -> S, mut f: impl FnMut(&mut S) -> u64, min: Duration) -> f64 {
    let mut best = 0f64;
    let start = Instant::now();
    let mut runs = 0;
    while runs < 3 || start.elapsed() < min {
        let mut state = setup();
        let t = Instant::now();
        let events = f(&mut state);
        best = best.max(events as f64 / t.elapsed().as_secs_f64());
        runs += 1;
    }
    best
}

fn bench(c: &mut Criterion) {
    let patterns = [
        ("sequential", sequential()),
        ("random_4k", random_4k()),
        ("hot_set", hot_set()),
    ];
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(2 * WRITES as u64));
    let large = criterion::BatchSize::LargeInput;
    for (name, p) in &patterns {
        group.bench_function(format!("{name}/engine"), |b| {
            b.iter_batched_ref(new_bitmap, |bm| ingest(bm, black_box(p), false), large)
        });
        group.bench_function(format!("{name}/engine_unplug"), |b| {
            b.iter_batched_ref(new_bitmap, |bm| ingest(bm, black_box(p), true), large)
        });
        let mut counters = vec![0u16; CHUNKS as usize];
        group.bench_function(format!("{name}/floor"), |b| {
            b.iter(|| floor(black_box(&mut counters), black_box(p)))
        });
    }
    group.finish();

    println!();
    println!(
        "summary: M events/s (start + end calls), {WRITES} writes per pattern on a fresh \
         {CHUNKS}-chunk bitmap, QD {QD}, daemon every {SWEEP_EVERY} writes"
    );
    // MD_BITMAP_BENCH_PATTERN=<name> limits the summary to one pattern (for profiling).
    let only = std::env::var("MD_BITMAP_BENCH_PATTERN").ok();
    let min = Duration::from_secs(2);
    for (name, p) in &patterns {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        let engine = rate(new_bitmap, |bm| ingest(bm, p, false), min);
        let unplug = rate(new_bitmap, |bm| ingest(bm, p, true), min);
        let fl = rate(
            || vec![0u16; CHUNKS as usize],
            |c| black_box(floor(c, p)),
            min,
        );
        println!(
            "  {name:<10} engine {:>6.1} | engine+unplug {:>6.1} | floor {:>6.1} \
             | engine/floor {:.2} | engine+unplug/floor {:.2}",
            engine / 1e6,
            unplug / 1e6,
            fl / 1e6,
            engine / fl,
            unplug / fl
        );
    }
    let bm = new_bitmap();
    println!(
        "  memory: {} heap bytes for {} chunks = {:.3} bytes/chunk (+ {} bytes fixed)",
        bm.heap_bytes(),
        CHUNKS,
        bm.heap_bytes() as f64 / CHUNKS as f64,
        std::mem::size_of::<Bitmap>()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
