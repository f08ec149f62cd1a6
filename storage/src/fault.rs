//! A fault-injecting `ObjectStore` wrapper for tests: fail the Nth write,
//! tear it (only a prefix lands), or delay every write. Plans can be drawn
//! from a seed, which a test prints, so any failure replays exactly.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use parking_lot::Mutex;

/// What happens to the chosen write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The write fails and nothing lands.
    Fail,
    /// Only the first `keep_bytes` bytes land (as the object), then the write
    /// fails, as when a process dies mid-write on a non-atomic store.
    Tear {
        /// Bytes of the payload that land.
        keep_bytes: usize,
    },
}

#[derive(Debug, Default)]
struct Plan {
    /// (write number, fault): write numbers count from 1.
    faults: Vec<(u64, Fault)>,
    delay: Option<Duration>,
}

/// An `ObjectStore` that injects faults into writes whose key contains a
/// filter string (all writes by default).
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    key_filter: String,
    plan: Mutex<Plan>,
    writes: AtomicU64,
    injected: AtomicU64,
    /// While set, every counted write fails (an outage: a full disk, a
    /// revoked permission), until cleared.
    outage: std::sync::atomic::AtomicBool,
}

impl FaultyStore {
    /// Wraps `inner` with no faults planned.
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyStore {
        FaultyStore {
            inner,
            key_filter: String::new(),
            plan: Mutex::new(Plan::default()),
            writes: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            outage: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Only writes whose key contains `filter` are counted and faulted
    /// (e.g. `"/log/"` for log segments only).
    pub fn with_key_filter(mut self, filter: impl Into<String>) -> FaultyStore {
        self.key_filter = filter.into();
        self
    }

    /// Plans `fault` for the `nth` counted write (1-based).
    pub fn inject(&self, nth: u64, fault: Fault) {
        self.plan.lock().faults.push((nth, fault));
    }

    /// Delays every counted write by `delay` before it happens.
    pub fn delay_writes(&self, delay: Duration) {
        self.plan.lock().delay = Some(delay);
    }

    /// Plans one fault drawn from `seed`: a write number in `writes` and
    /// either a failure or a tear at a random prefix length (up to
    /// `max_keep_bytes`). Returns what was planned so a test can print it.
    pub fn inject_seeded(
        &self,
        seed: u64,
        writes: Range<u64>,
        max_keep_bytes: usize,
    ) -> (u64, Fault) {
        let mut rng = SplitMix64(seed);
        let span = writes.end.saturating_sub(writes.start).max(1);
        let nth = writes.start + rng.next() % span;
        let fault = if rng.next().is_multiple_of(2) {
            Fault::Fail
        } else {
            Fault::Tear {
                keep_bytes: (rng.next() % (max_keep_bytes as u64 + 1)) as usize,
            }
        };
        self.inject(nth, fault);
        (nth, fault)
    }

    /// Starts (`true`) or ends an outage: while it lasts every counted
    /// write, single or multipart, fails and nothing lands, as on a full
    /// disk. Reads and deletes go on.
    pub fn set_outage(&self, on: bool) {
        self.outage.store(on, Ordering::SeqCst);
    }

    /// Counted writes so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    fn injected_error(fault: Fault, location: &Path) -> object_store::Error {
        object_store::Error::Generic {
            store: "FaultyStore",
            source: format!("injected {fault:?} on write of {location}").into(),
        }
    }
}

/// Small deterministic generator, so a seed means the same plan everywhere.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .field("key_filter", &self.key_filter)
            .field("writes", &self.writes())
            .finish()
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if !location.as_ref().contains(&self.key_filter) {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let nth = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let (delay, fault) = {
            let plan = self.plan.lock();
            let fault = plan.faults.iter().find(|(n, _)| *n == nth).map(|(_, f)| *f);
            (plan.delay, fault)
        };
        let fault = match self.outage.load(Ordering::SeqCst) {
            true => Some(Fault::Fail),
            false => fault,
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        match fault {
            None => self.inner.put_opts(location, payload, opts).await,
            Some(Fault::Fail) => {
                self.injected.fetch_add(1, Ordering::SeqCst);
                Err(Self::injected_error(Fault::Fail, location))
            }
            Some(Fault::Tear { keep_bytes }) => {
                self.injected.fetch_add(1, Ordering::SeqCst);
                let whole = Bytes::from(payload);
                let prefix = whole.slice(..keep_bytes.min(whole.len()));
                self.inner
                    .put_opts(location, PutPayload::from(prefix), opts)
                    .await?;
                Err(Self::injected_error(Fault::Tear { keep_bytes }, location))
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if location.as_ref().contains(&self.key_filter) && self.outage.load(Ordering::SeqCst) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(Self::injected_error(Fault::Fail, location));
        }
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
