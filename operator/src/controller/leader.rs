//! Leader election on a `coordination.k8s.io/v1` Lease, so that with more
//! than one replica only one writes. The leader renews the lease every
//! retry period; a leader that has not renewed within the renew deadline
//! (shorter than the lease duration, as in client-go) steps down before any
//! other replica may take the lease, so two replicas never write at once.
//! Stepping down does not end the process: it campaigns again and leads
//! once the lease is free (an API server restart costs a term, not a Pod
//! restart and its CrashLoopBackOff delays).

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::{sync::watch, time::Instant};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a holder's lease lasts without renewal: how long a standby
    /// waits after a leader dies without releasing it.
    pub duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby tries to take the lease.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The settings are consistent: retry < renew deadline < duration, so a
    /// leader renews more than once per deadline and steps down before its
    /// lease can expire for the others.
    pub fn check(&self) -> Result<(), String> {
        if self.duration.as_secs() < 1 || self.duration.subsec_nanos() != 0 {
            return Err(format!(
                "--lease-duration must be whole seconds, at least 1s (got {:?})",
                self.duration
            ));
        }
        if self.renew_deadline >= self.duration {
            return Err(format!(
                "--lease-renew-deadline ({:?}) must be shorter than --lease-duration ({:?})",
                self.renew_deadline, self.duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(format!(
                "--lease-retry-period ({:?}) must be above zero and shorter than --lease-renew-deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

fn lease_spec(
    identity: &str,
    duration: Duration,
    transitions: i32,
    acquired: Option<MicroTime>,
) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(duration.as_secs() as i32),
        acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// What a replica last saw of another holder's Lease record, and when by
/// its own clock. Like client-go, a record counts as expired once it has
/// not changed for its duration *as this replica observed it*: the
/// holder's `renewTime` comes from another node's clock, and comparing it
/// with ours would shorten or stretch a failover by the skew between them.
#[derive(Debug, Default)]
struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    since: Option<Instant>,
}

impl Observed {
    /// Whether `spec`'s holder has let it lapse, as of `now`.
    fn expired(&mut self, spec: &LeaseSpec, now: Instant) -> bool {
        if spec.holder_identity.is_none() || spec.renew_time.is_none() {
            // Released (or never held).
            return true;
        }
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        let since = match (&self.record, self.since) {
            (Some(seen), Some(since)) if *seen == record => since,
            _ => {
                self.record = Some(record);
                self.since = Some(now);
                now
            }
        };
        let secs = u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0);
        now.duration_since(since) > Duration::from_secs(secs)
    }
}

/// Tries once to take or renew the lease. Returns whether we hold it.
async fn try_acquire(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(lease_spec(&cfg.identity, cfg.duration, 0, None)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let ours = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
            if !ours && !observed.expired(&spec, Instant::now()) {
                return Ok(false);
            }
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
            let acquired = if ours { spec.acquire_time.clone() } else { None };
            lease.spec = Some(lease_spec(&cfg.identity, cfg.duration, transitions, acquired));
            // replace carries our resourceVersion: a concurrent writer makes this a 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Gives the lease up (on a clean shutdown), so a standby replica or the
/// restarted process takes over at once instead of after the lease duration.
pub async fn release(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else { return };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %cfg.name, "released leadership"),
        Err(e) => tracing::warn!(lease = %cfg.name, error = %e, "failed to release the lease"),
    }
}

/// Blocks until this replica leads, then keeps renewing in the background.
/// The returned receiver turns `false` when leadership is lost (another
/// replica took the lease, or no renewal succeeded within the renew
/// deadline); the renewing task ends then, or when the receiver is dropped.
pub async fn lead(client: Client, cfg: LeaseConfig) -> watch::Receiver<bool> {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let (mut said_waiting, mut failures) = (false, 0u32);
    let mut observed = Observed::default();
    loop {
        let attempt = tokio::time::timeout(cfg.renew_deadline, try_acquire(&api, &cfg, &mut observed));
        match attempt.await.unwrap_or(Ok(false)) {
            Ok(true) => break,
            // Said once per campaign: a standby retries every retry period.
            Ok(false) if !said_waiting => {
                said_waiting = true;
                tracing::info!(lease = %cfg.name, "another replica leads; standing by");
            }
            Ok(false) => {}
            // The first failure, then one line in 15 (an API server that is
            // down for minutes does not fill the log).
            Err(e) => {
                if failures % 15 == 0 {
                    tracing::warn!(lease = %cfg.name, error = %e, attempts = failures + 1, "failed to acquire lease");
                }
                failures += 1;
            }
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
    tracing::info!(lease = %cfg.name, identity = %cfg.identity, "acquired leadership");
    let (tx, rx) = watch::channel(true);
    tokio::spawn(async move {
        let mut observed = Observed::default();
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(cfg.retry_period) => {}
                _ = tx.closed() => return,
            }
            // One attempt may not outlast the deadline (an API server that
            // accepts connections and never answers).
            let left = cfg.renew_deadline.saturating_sub(last_renewed.elapsed());
            let attempt = tokio::time::timeout(left, try_acquire(&api, &cfg, &mut observed)).await;
            match attempt {
                Ok(Ok(true)) => last_renewed = tokio::time::Instant::now(),
                Ok(Ok(false)) => {
                    tracing::error!(lease = %cfg.name, "lost leadership to another replica");
                    let _ = tx.send(false);
                    return;
                }
                Ok(Err(e)) => tracing::warn!(lease = %cfg.name, error = %e, "failed to renew lease"),
                Err(_) => tracing::warn!(lease = %cfg.name, "renewing the lease timed out"),
            }
            if last_renewed.elapsed() >= cfg.renew_deadline {
                tracing::error!(
                    lease = %cfg.name,
                    deadline = ?cfg.renew_deadline,
                    "no renewal within the renew deadline; stepping down"
                );
                let _ = tx.send(false);
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(duration: u64, deadline: u64, retry: u64) -> LeaseConfig {
        LeaseConfig {
            namespace: "paver-system".into(),
            name: "paver-operator".into(),
            identity: "a".into(),
            duration: Duration::from_secs(duration),
            renew_deadline: Duration::from_secs(deadline),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn expiry_is_timed_by_the_observers_clock() {
        let t0 = Instant::now();
        let spec = |holder: Option<&str>, renewed_secs: i64| LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                Timestamp::UNIX_EPOCH + k8s_openapi::jiff::SignedDuration::from_secs(renewed_secs),
            )),
            ..Default::default()
        };
        let mut seen = Observed::default();
        // A renewTime from 1970 (a skewed clock) is not expired at first sight.
        assert!(!seen.expired(&spec(Some("a"), 0), t0));
        assert!(!seen.expired(&spec(Some("a"), 0), t0 + Duration::from_secs(15)));
        assert!(seen.expired(&spec(Some("a"), 0), t0 + Duration::from_secs(16)));
        // A renewal restarts the wait.
        assert!(!seen.expired(&spec(Some("a"), 2), t0 + Duration::from_secs(17)));
        assert!(!seen.expired(&spec(Some("a"), 2), t0 + Duration::from_secs(31)));
        assert!(seen.expired(&spec(Some("a"), 2), t0 + Duration::from_secs(33)));
        // Released: free at once.
        let mut released = spec(None, 2);
        released.renew_time = None;
        assert!(Observed::default().expired(&released, t0));
    }

    #[test]
    fn lease_settings_must_nest() {
        assert_eq!(cfg(15, 10, 2).check(), Ok(()));
        let e = cfg(10, 10, 2).check().expect_err("deadline = duration");
        assert!(e.contains("--lease-renew-deadline"), "{e}");
        let e = cfg(15, 10, 10).check().expect_err("retry = deadline");
        assert!(e.contains("--lease-retry-period"), "{e}");
        let e = cfg(15, 10, 0).check().expect_err("retry zero");
        assert!(e.contains("--lease-retry-period"), "{e}");
        let mut c = cfg(15, 10, 2);
        c.duration = Duration::from_millis(15_500);
        assert!(c.check().expect_err("fractional").contains("whole seconds"));
    }
}
