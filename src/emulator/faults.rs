//! Which fault the next create gets: the script first, then seeded random
//! shares. Pure apart from its own state (no I/O, no clock).

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::{FaultsConfig, ScriptedFault};

/// The fault picker of one emulator.
#[derive(Debug)]
pub struct FaultPicker {
    script: VecDeque<ScriptedFault>,
    throttle: f64,
    unavailable: f64,
    drop: f64,
    rng: StdRng,
}

impl FaultPicker {
    pub fn new(config: &FaultsConfig) -> Self {
        FaultPicker {
            script: config.script.iter().copied().collect(),
            throttle: config.throttle,
            unavailable: config.unavailable,
            drop: config.drop,
            rng: match config.seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_os_rng(),
            },
        }
    }

    /// Replaces what is left of the script.
    pub fn set_script(&mut self, script: impl IntoIterator<Item = ScriptedFault>) {
        self.script = script.into_iter().collect();
    }

    /// What is left of the script.
    pub fn script(&self) -> Vec<ScriptedFault> {
        self.script.iter().copied().collect()
    }

    /// The fault of the next create. Scripted entries do not consume random
    /// draws, so a seed gives the same random sequence with or without a script.
    pub fn next_fault(&mut self) -> ScriptedFault {
        if let Some(f) = self.script.pop_front() {
            return f;
        }
        if self.throttle + self.unavailable + self.drop <= 0.0 {
            return ScriptedFault::Ok;
        }
        let x: f64 = self.rng.random();
        if x < self.throttle {
            ScriptedFault::Throttle
        } else if x < self.throttle + self.unavailable {
            ScriptedFault::Unavailable
        } else if x < self.throttle + self.unavailable + self.drop {
            ScriptedFault::Drop
        } else {
            ScriptedFault::Ok
        }
    }
}

/// `Retry-After` in seconds, fractional when needed (`1.5`, `0.25`, `2`).
pub fn retry_after_header(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}", ms / 1000)
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        s.trim_end_matches('0').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(seed: u64, throttle: f64, unavailable: f64, drop: f64) -> FaultsConfig {
        FaultsConfig {
            seed: Some(seed),
            throttle,
            unavailable,
            drop,
            ..FaultsConfig::default()
        }
    }

    #[test]
    fn no_faults_by_default() {
        let mut p = FaultPicker::new(&FaultsConfig::default());
        assert!((0..1000).all(|_| p.next_fault() == ScriptedFault::Ok));
    }

    #[test]
    fn script_comes_first_then_the_shares() {
        let mut c = config(1, 0.0, 0.0, 0.0);
        c.script = vec![
            ScriptedFault::Throttle,
            ScriptedFault::Drop,
            ScriptedFault::Ok,
        ];
        let mut p = FaultPicker::new(&c);
        assert_eq!(p.next_fault(), ScriptedFault::Throttle);
        assert_eq!(p.next_fault(), ScriptedFault::Drop);
        assert_eq!(p.next_fault(), ScriptedFault::Ok);
        assert_eq!(p.next_fault(), ScriptedFault::Ok);
        p.set_script([ScriptedFault::ServerError]);
        assert_eq!(p.script(), vec![ScriptedFault::ServerError]);
        assert_eq!(p.next_fault(), ScriptedFault::ServerError);
    }

    #[test]
    fn a_seed_is_reproducible() {
        let draw = |seed| {
            let mut p = FaultPicker::new(&config(seed, 0.2, 0.2, 0.2));
            (0..200).map(|_| p.next_fault()).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn shares_are_roughly_respected() {
        let mut p = FaultPicker::new(&config(7, 0.1, 0.05, 0.02));
        let n = 20_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[match p.next_fault() {
                ScriptedFault::Throttle => 0,
                ScriptedFault::Unavailable => 1,
                ScriptedFault::Drop => 2,
                _ => 3,
            }] += 1;
        }
        let share = |i: usize| counts[i] as f64 / n as f64;
        assert!((share(0) - 0.1).abs() < 0.01, "{counts:?}");
        assert!((share(1) - 0.05).abs() < 0.01, "{counts:?}");
        assert!((share(2) - 0.02).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn retry_after_is_in_seconds() {
        assert_eq!(retry_after_header(Duration::from_secs(2)), "2");
        assert_eq!(retry_after_header(Duration::from_millis(1500)), "1.5");
        assert_eq!(retry_after_header(Duration::from_millis(250)), "0.25");
        assert_eq!(retry_after_header(Duration::from_millis(10)), "0.01");
        assert_eq!(retry_after_header(Duration::ZERO), "0");
    }
}
