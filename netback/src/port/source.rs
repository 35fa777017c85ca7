//! A generator port for Dom0→guest load: fills every connected guest's RX buffers with
//! copies of template frames as fast as the guest posts buffers, without copying the
//! template (frames are shared). Frames the guests send are counted and discarded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Port, RxEmitter, VifLink};
use crate::frame::{FrameBatch, OffloadMeta};

/// Emits template frames round-robin, optionally up to a total count.
#[derive(Debug)]
pub struct Source {
    templates: Vec<(Arc<[u8]>, OffloadMeta)>,
    limit: Option<u64>,
    generated: AtomicU64,
    received: AtomicU64,
}

impl Source {
    /// A source cycling through `templates` forever (`limit == None`) or until `limit`
    /// frames were generated in total.
    pub fn new(templates: Vec<(Vec<u8>, OffloadMeta)>, limit: Option<u64>) -> Arc<Self> {
        Arc::new(Self {
            templates: templates
                .into_iter()
                .map(|(d, m)| (Arc::from(d), m))
                .collect(),
            limit,
            generated: AtomicU64::new(0),
            received: AtomicU64::new(0),
        })
    }

    /// Frames handed to guests so far.
    pub fn generated(&self) -> u64 {
        self.generated.load(Ordering::Relaxed)
    }

    /// Frames received from guests (discarded).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Port for Source {
    fn transmit(&self, _from: &Arc<VifLink>, _queue: u16, frames: &FrameBatch<'_>) {
        self.received
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
    }

    fn generates(&self) -> bool {
        // Not once the limit is reached: the RX thread then parks instead of polling
        // an exhausted generator.
        !self.templates.is_empty() && self.limit.is_none_or(|l| self.generated() < l)
    }

    fn generate(&self, _to: &VifLink, _queue: u16, out: &mut RxEmitter<'_>) {
        if self.templates.is_empty() {
            return;
        }
        let mut want = out.budget() as u64;
        let start;
        if let Some(limit) = self.limit {
            // Reserve our share atomically so concurrent queues never exceed the limit.
            let mut cur = self.generated.load(Ordering::Relaxed);
            loop {
                let take = want.min(limit.saturating_sub(cur));
                if take == 0 {
                    return;
                }
                match self.generated.compare_exchange_weak(
                    cur,
                    cur + take,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        want = take;
                        start = cur as usize;
                        break;
                    }
                    Err(now) => cur = now,
                }
            }
        } else {
            start = self.generated.fetch_add(want, Ordering::Relaxed) as usize;
        }
        // Round-robin from `start`, wrapping by hand (no division per frame).
        let n = self.templates.len();
        let mut t = start % n;
        for _ in 0..want {
            let Some((data, meta)) = self.templates.get(t) else {
                break;
            };
            if !out.push_shared(data.clone(), *meta) {
                break;
            }
            t += 1;
            if t == n {
                t = 0;
            }
        }
    }
}
