//! Running async code from the harness's synchronous constructors, which may themselves be
//! called from inside a `#[tokio::test]` (where `Runtime::block_on` would panic).

use std::future::Future;

/// Runs the future made by `make` to completion on a fresh current-thread runtime in a scoped
/// thread, and returns its output. Works from sync code and from inside another runtime.
pub fn block_on<F, Fut, T>(make: F) -> T
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T>,
    T: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build tokio runtime")
                .block_on(make())
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}
