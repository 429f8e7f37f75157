//! Process-wide set-up of the math threads, done once at process start, before candle, the
//! tokenizer or rayon start a thread.

use std::sync::Once;

static INIT: Once = Once::new();

/// Make the math use `threads` cores (`None` or 0: all cores). Candle's CPU kernels and the
/// tokenizer read rayon's global pool, so this must run before either starts a thread; later
/// calls do nothing.
///
/// Candle 0.11 also runs large element-wise ops on a second pool of its own whose threads spin
/// between ops. Beside rayon's pool (GEMMs and our fused kernels) that is one spinning thread
/// more than there are cores, and the main thread spins at its barrier while a worker waits to
/// be scheduled: a profile of a 2-thread training step spent 60 % of its samples spinning. Our
/// hot element-wise work is in fused rayon kernels, so candle's pool gets no workers
/// (`CANDLE_NUM_THREADS=1`) unless the user sets that variable.
pub fn init(threads: Option<usize>) {
    INIT.call_once(|| {
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            std::env::set_var("CANDLE_NUM_THREADS", "1");
        }
        if let Some(n) = threads.filter(|&n| n > 0) {
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global();
        }
    });
}

/// Run `job` on one of the math threads and wait for it. Kernels it starts then split their
/// work from inside the pool: with one thread they run inline, with more the caller's thread
/// takes a share instead of waking a worker and sleeping until it is done (at one thread that
/// hand-off was ~10 % of a training profile). For batch jobs only: a job that blocks on I/O
/// for long holds a math thread meanwhile.
pub fn on_math_thread<R: Send>(job: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| job())
}
