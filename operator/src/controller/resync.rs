//! The drift check's schedule: every request is reconciled again one
//! resync period after its last successful reconcile.
//!
//! kube-runtime's scheduler would do this with `Action::requeue`, at about
//! 1.7 KiB per request (two copies of the object reference, a delay-queue
//! slot and a hash entry), 17 MiB at 10,000 requests. The period is the same
//! for every request, so due times arrive in order: a FIFO of
//! `(due, request)` and a map of each request's latest due time are enough,
//! at about 100 bytes per request. A request reconciled again before it is
//! due moves to the back; only its latest entry fires.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{ResourceExt, runtime::reflector::ObjectRef};
use paver_crds::ServiceRequest;
use tokio::{sync::Notify, time::Instant};

/// Requests waiting for their next drift check.
#[derive(Debug)]
pub struct Resync {
    period: Duration,
    inner: Mutex<Inner>,
    added: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// `namespace/name` → when it is due.
    due: HashMap<Arc<str>, Instant>,
    /// In due order (every entry is `now + period` when it is pushed).
    queue: VecDeque<(Instant, Arc<str>)>,
}

impl Resync {
    pub fn new(period: Duration) -> Self {
        Resync {
            period,
            inner: Mutex::default(),
            added: Notify::new(),
        }
    }

    /// `sr` was reconciled now: check it again one period from now.
    pub fn schedule<K: ResourceExt>(&self, sr: &K) {
        let key: Arc<str> = super::request::key(sr).into();
        let due = Instant::now() + self.period;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.due.insert(key.clone(), due);
        inner.queue.push_back((due, key));
        // Compact when stale entries (requests rescheduled early) dominate.
        if inner.queue.len() > 2 * inner.due.len() + 1024 {
            let Inner { due, queue } = &mut *inner;
            queue.retain(|(at, key)| due.get(key) == Some(at));
        }
        drop(inner);
        self.added.notify_one();
    }

    /// How many requests are waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next request that is due at `now`, if any; otherwise when the
    /// next one will be (`None`: nothing is waiting).
    fn pop_due(&self, now: Instant) -> Result<ObjectRef<ServiceRequest>, Option<Instant>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((at, key)) = inner.queue.front().cloned() {
            if at > now {
                return Err(Some(at));
            }
            inner.queue.pop_front();
            if inner.due.get(&key) != Some(&at) {
                continue; // rescheduled since: a later entry stands for it
            }
            inner.due.remove(&key);
            let (ns, name) = key.split_once('/').unwrap_or(("", &key));
            return Ok(ObjectRef::new(name).within(ns));
        }
        Err(None)
    }

    /// Sends each request to `trigger` when it is due, until the receiver is gone.
    pub async fn run(&self, trigger: tokio::sync::mpsc::UnboundedSender<ObjectRef<ServiceRequest>>) {
        loop {
            match self.pop_due(Instant::now()) {
                Ok(r) => {
                    if trigger.send(r).is_err() {
                        return;
                    }
                }
                Err(Some(at)) => tokio::time::sleep_until(at).await,
                Err(None) => self.added.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ns: &str, name: &str) -> ServiceRequest {
        let mut sr = ServiceRequest::new(name, Default::default());
        sr.metadata.namespace = Some(ns.into());
        sr
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_fires_once_a_period_after_its_last_reconcile() {
        let resync = Resync::new(Duration::from_secs(60));
        let t0 = Instant::now();
        resync.schedule(&request("shop", "orders"));
        tokio::time::advance(Duration::from_secs(10)).await;
        resync.schedule(&request("shop", "web"));
        tokio::time::advance(Duration::from_secs(10)).await;
        // Reconciled again at t0+20s: due at t0+80s, not t0+60s.
        resync.schedule(&request("shop", "orders"));
        assert_eq!(resync.len(), 2);

        assert_eq!(
            resync.pop_due(t0 + Duration::from_secs(59)),
            Err(Some(t0 + Duration::from_secs(60)))
        );
        let web = resync.pop_due(t0 + Duration::from_secs(75));
        assert_eq!(web, Ok(ObjectRef::new("web").within("shop")));
        assert_eq!(
            resync.pop_due(t0 + Duration::from_secs(75)),
            Err(Some(t0 + Duration::from_secs(80))),
            "the stale t0+60s entry for orders is skipped"
        );
        assert_eq!(
            resync.pop_due(t0 + Duration::from_secs(80)),
            Ok(ObjectRef::new("orders").within("shop"))
        );
        assert_eq!(resync.pop_due(t0 + Duration::from_secs(500)), Err(None));
        assert!(resync.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn run_sends_due_requests_and_waits_for_new_ones() {
        let resync = Arc::new(Resync::new(Duration::from_secs(30)));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn({
            let resync = resync.clone();
            async move { resync.run(tx).await }
        });
        tokio::task::yield_now().await;
        resync.schedule(&request("ns", "a"));
        let started = Instant::now();
        let got = rx.recv().await;
        assert_eq!(got, Some(ObjectRef::new("a").within("ns")));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        task.abort();
    }
}
