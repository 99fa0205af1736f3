//! The closed loop: `conns` connections, each with one request outstanding, for `duration`
//! after a `warmup` whose requests are not counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::keys::{key_name, Distribution, KeyChooser};
use crate::stats::{Latency, Recorder, Summary};
use crate::target::{Target, Workload};

#[derive(Clone, Debug)]
pub struct Config {
    pub target: Target,
    pub workload: Workload,
    pub conns: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub keys: u64,
    pub key_size: usize,
    pub value_size: usize,
    pub distribution: Distribution,
    pub zipf_theta: f64,
    pub timeout: Duration,
    pub seed: u64,
}

impl Config {
    pub fn validate(&self) -> Result<()> {
        if self.conns == 0 || self.conns > 10_000 {
            return Err(Error::Invalid("--conns must be 1..=10000".into()));
        }
        if self.keys == 0 {
            return Err(Error::Invalid("--keys must be at least 1".into()));
        }
        if self.key_size == 0 || self.value_size == 0 {
            return Err(Error::Invalid(
                "key and value sizes must be at least 1".into(),
            ));
        }
        if !(self.zipf_theta > 0.0 && self.zipf_theta < 1.0) {
            return Err(Error::Invalid("--zipf-theta must be in (0, 1)".into()));
        }
        Ok(())
    }
}

/// Runs the benchmark and summarises it.
pub async fn run(config: Config) -> Result<Summary> {
    config.validate()?;
    // Fail fast on a wrong address instead of counting errors for the whole run.
    drop(Conn::connect(config.target.addr()).await?);
    let config = Arc::new(config);
    let chooser = Arc::new(KeyChooser::new(
        config.distribution,
        config.keys,
        config.zipf_theta,
    ));
    let start = Instant::now();
    let measure_from = start + config.warmup;
    let end = measure_from + config.duration;
    let tasks: Vec<_> = (0..config.conns)
        .map(|c| {
            let (config, chooser) = (config.clone(), chooser.clone());
            tokio::spawn(async move { connection(c, &config, &chooser, measure_from, end).await })
        })
        .collect();
    let mut total = Recorder::default();
    for t in tasks {
        total.merge(t.await.unwrap_or_default());
    }
    let secs = match config.workload {
        Workload::Load => start.elapsed().as_secs_f64(),
        _ => config.duration.as_secs_f64(),
    };
    let writes_acked_total = total.writes.len() as u64 + total.warmup_writes;
    let mut all = total.reads.clone();
    all.extend_from_slice(&total.writes);
    let ops = all.len() as u64;
    Ok(Summary {
        target: config.target.kind().to_string(),
        addr: config.target.addr().to_string(),
        workload: config.workload.to_string(),
        distribution: format!("{:?}", config.distribution).to_lowercase(),
        conns: config.conns,
        keys: config.keys,
        value_size: config.value_size,
        secs,
        ops,
        ops_per_sec: ops as f64 / secs.max(1e-9),
        all: Latency::of(all),
        reads: Latency::of(total.reads),
        writes: Latency::of(total.writes),
        errors: total.bad_status + total.io_errors,
        bad_status: total.bad_status,
        io_errors: total.io_errors,
        writes_acked_total,
    })
}

async fn connection(
    c: usize,
    config: &Config,
    chooser: &KeyChooser,
    measure_from: Instant,
    end: Instant,
) -> Recorder {
    let mut rec = Recorder::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed.wrapping_add(c as u64 * 7919));
    let value = "v".repeat(config.value_size);
    let (mut body, mut request) = (Vec::with_capacity(1024), Vec::with_capacity(1024));
    let mut conn: Option<Conn> = None;
    let mut next_load = c as u64;
    let is_load = config.workload == Workload::Load;
    while Instant::now() < end || is_load {
        let (is_read, key) = match config.workload {
            Workload::Load => {
                if next_load >= config.keys {
                    break;
                }
                next_load += config.conns as u64;
                (false, next_load - config.conns as u64)
            }
            Workload::Put => (false, chooser.next(&mut rng)),
            Workload::Get => (true, chooser.next(&mut rng)),
            Workload::Mixed { read_pct } => (
                rng.random_range(0..100u8) < read_pct,
                chooser.next(&mut rng),
            ),
        };
        let key = key_name(key, config.key_size);
        let path = if is_read {
            config.target.get(&key, &mut body)
        } else {
            config.target.put(&key, &value, &mut body)
        };
        if conn.is_none() {
            match Conn::connect(config.target.addr()).await {
                Ok(cn) => conn = Some(cn),
                Err(_) => {
                    rec.io_errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(cn) = conn.as_mut() else { continue };
        let t0 = Instant::now();
        let answer = tokio::time::timeout(config.timeout, cn.post(path, &body, &mut request)).await;
        let latency = t0.elapsed();
        let counted = t0 >= measure_from || is_load;
        match answer {
            Ok(Ok(status)) => {
                let ok = if is_read {
                    config.target.read_ok(status)
                } else {
                    (200..300).contains(&status)
                };
                if counted {
                    if ok {
                        rec.record(is_read, latency);
                    } else {
                        rec.bad_status += 1;
                    }
                } else if ok && !is_read {
                    rec.warmup_writes += 1;
                }
            }
            Ok(Err(_)) | Err(_) => {
                if counted {
                    rec.io_errors += 1;
                }
                conn = None;
            }
        }
    }
    rec
}
