//! Which key the next request uses: uniform, or zipfian (a few hot keys, a long cold tail).
//!
//! The zipfian draw is the constant-time method of Gray et al. ("Quickly generating
//! billion-record synthetic databases"), as YCSB uses it: precompute zeta(n, θ) once, then each
//! draw is one uniform number and a power.

use rand::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Uniform,
    Zipfian,
}

impl std::str::FromStr for Distribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(Distribution::Uniform),
            "zipfian" | "zipf" => Ok(Distribution::Zipfian),
            other => Err(format!(
                "unknown distribution {other:?} (uniform | zipfian)"
            )),
        }
    }
}

/// Draws key indexes in `0..n`.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    Uniform { n: u64 },
    Zipfian(Zipf),
}

impl KeyChooser {
    pub fn new(dist: Distribution, n: u64, theta: f64) -> KeyChooser {
        match dist {
            Distribution::Uniform => KeyChooser::Uniform { n: n.max(1) },
            Distribution::Zipfian => KeyChooser::Zipfian(Zipf::new(n.max(1), theta)),
        }
    }

    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        match self {
            KeyChooser::Uniform { n } => rng.random_range(0..*n),
            KeyChooser::Zipfian(z) => z.next(rng),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Zipf {
    n: u64,
    theta: f64,
    zeta_n: f64,
    alpha: f64,
    eta: f64,
}

impl Zipf {
    /// `theta` in (0, 1); YCSB's default is 0.99.
    pub fn new(n: u64, theta: f64) -> Zipf {
        let zeta = |count: u64| {
            (1..=count)
                .map(|i| 1.0 / (i as f64).powf(theta))
                .sum::<f64>()
        };
        let zeta_n = zeta(n);
        let zeta_2 = zeta(2.min(n));
        let eta = if n <= 1 {
            0.0
        } else {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        };
        Zipf {
            n,
            theta,
            zeta_n,
            alpha: 1.0 / (1.0 - theta),
            eta,
        }
    }

    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let k = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        k.min(self.n - 1)
    }
}

/// The key for index `i`: 8 bytes like `../shared/anchors/etcd_kv.lua` (`k0000042`) when
/// `size` is 8; padded or cut to `size` otherwise.
pub fn key_name(i: u64, size: usize) -> String {
    let mut k = format!("k{i:07}");
    if k.len() < size {
        k.extend(std::iter::repeat_n('0', size - k.len()));
    }
    k.truncate(size.max(1));
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let z = KeyChooser::new(Distribution::Zipfian, 10_000, 0.99);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = vec![0u32; 10_000];
        for _ in 0..100_000 {
            counts[z.next(&mut rng) as usize] += 1;
        }
        // Key 0 is the hottest and far above the uniform share of 10 per key.
        assert!(counts[0] > 5_000, "key 0 drawn {} times", counts[0]);
        assert!(counts[0] >= counts[100]);
        let distinct = counts.iter().filter(|&&c| c > 0).count();
        assert!(distinct > 1_000, "only {distinct} distinct keys");
    }

    #[test]
    fn uniform_covers_the_range() {
        let u = KeyChooser::new(Distribution::Uniform, 100, 0.99);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut seen = [false; 100];
        for _ in 0..10_000 {
            seen[u.next(&mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn key_names_have_the_asked_size() {
        assert_eq!(key_name(42, 8), "k0000042");
        assert_eq!(key_name(42, 12).len(), 12);
        assert_eq!(key_name(42, 4).len(), 4);
    }
}
