//! Timing loops and summaries.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Summary of a set of samples, in microseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Summary {
    pub samples: usize,
    pub median_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub min_us: f64,
    pub max_us: f64,
}

impl Summary {
    pub fn of(samples: &[Duration]) -> Summary {
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let n = us.len();
        if n == 0 {
            return Summary {
                samples: 0,
                median_us: f64::NAN,
                p99_us: f64::NAN,
                mean_us: f64::NAN,
                min_us: f64::NAN,
                max_us: f64::NAN,
            };
        }
        Summary {
            samples: n,
            median_us: percentile(&us, 50.0),
            p99_us: percentile(&us, 99.0),
            mean_us: us.iter().sum::<f64>() / n as f64,
            min_us: us[0],
            max_us: us[n - 1],
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `f` `warmup` times untimed, then `iterations` times, timing each call.
pub fn time<T>(warmup: usize, iterations: usize, mut f: impl FnMut() -> T) -> Summary {
    for _ in 0..warmup {
        std::hint::black_box(f());
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        std::hint::black_box(f());
        samples.push(start.elapsed());
    }
    Summary::of(&samples)
}

/// Microseconds, human-sized.
pub fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}
