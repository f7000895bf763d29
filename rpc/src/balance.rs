//! Load balancers ([`LoadBalancer`] implementations): [`P2c`] (the default), smooth
//! [`WeightedRoundRobin`], [`WeightedRandom`], and [`ConsistentHash`] on a key the
//! caller gives per call.
//!
//! Each skips instances the client says may not take a call ([`Pick::usable`]: already
//! tried by this call, failing to connect, breaker open).

use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use crate::discovery::{Instance, LoadBalancer, Pick, Picker};

/// A fast per-thread random number (xorshift64*), seeded from the thread and the clock.
pub(crate) fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::thread::current().id().hash(&mut h);
            std::time::SystemTime::now().hash(&mut h);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A random index below `n` (n > 0).
fn below(n: usize) -> usize {
    (((random() >> 32) * n as u64) >> 32) as usize
}

/// The first usable index from `start`, going round.
fn first_usable(pick: &Pick<'_>, start: usize) -> Option<usize> {
    let n = pick.len();
    (0..n).map(|i| (start + i) % n).find(|&i| pick.usable(i))
}

/// Power of two choices: of two usable instances drawn at random, the one with the lower
/// load, where load is calls in flight (plus one) times the latency's moving average,
/// divided by the weight. It follows slow and busy instances away within a few calls
/// and needs no shared counter. The default balancer.
#[derive(Debug, Default, Clone, Copy)]
pub struct P2c;

struct P2cPicker {
    weights: Vec<u32>,
}

impl LoadBalancer for P2c {
    fn name(&self) -> &'static str {
        "p2c"
    }

    fn picker(&self, instances: Arc<[Instance]>) -> Box<dyn Picker> {
        Box::new(P2cPicker {
            weights: instances.iter().map(|i| i.weight.max(1)).collect(),
        })
    }
}

impl P2cPicker {
    fn score(&self, pick: &Pick<'_>, i: usize) -> f64 {
        let load = pick.load(i);
        // An instance without a latency yet counts as fast as 100 µs, so that new
        // instances are tried.
        let latency = load.latency.as_secs_f64().max(100e-6);
        (load.in_flight as f64 + 1.0) * latency / self.weights[i] as f64
    }
}

impl Picker for P2cPicker {
    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        let n = self.weights.len();
        match n {
            0 => None,
            1 => pick.usable(0).then_some(0),
            _ => {
                let a = first_usable(pick, below(n))?;
                // A second one, distinct from the first, if there is any.
                let off = 1 + below(n - 1);
                let b = match first_usable(pick, (a + off) % n) {
                    Some(b) if b != a => b,
                    _ => return Some(a),
                };
                Some(if self.score(pick, b) < self.score(pick, a) {
                    b
                } else {
                    a
                })
            }
        }
    }
}

/// Smooth weighted round robin (nginx's): over every `total weight` calls, each instance
/// gets its weight's share, interleaved rather than in runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct WeightedRoundRobin;

struct WrrPicker {
    weights: Vec<i64>,
    current: Mutex<Vec<i64>>,
}

impl LoadBalancer for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        "wrr"
    }

    fn picker(&self, instances: Arc<[Instance]>) -> Box<dyn Picker> {
        Box::new(WrrPicker {
            weights: instances.iter().map(|i| i.weight.max(1) as i64).collect(),
            current: Mutex::new(vec![0; instances.len()]),
        })
    }
}

impl Picker for WrrPicker {
    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = 0;
        let mut best: Option<usize> = None;
        for (i, w) in self.weights.iter().enumerate() {
            if !pick.usable(i) {
                continue;
            }
            cur[i] += w;
            total += w;
            if best.is_none_or(|b| cur[i] > cur[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        cur[b] -= total;
        Some(b)
    }
}

/// Each call to an instance drawn at random in proportion to its weight.
#[derive(Debug, Default, Clone, Copy)]
pub struct WeightedRandom;

struct RandomPicker {
    /// Running sums of the weights.
    sums: Vec<u64>,
}

impl LoadBalancer for WeightedRandom {
    fn name(&self) -> &'static str {
        "random"
    }

    fn picker(&self, instances: Arc<[Instance]>) -> Box<dyn Picker> {
        let mut total = 0;
        Box::new(RandomPicker {
            sums: instances
                .iter()
                .map(|i| {
                    total += i.weight.max(1) as u64;
                    total
                })
                .collect(),
        })
    }
}

impl Picker for RandomPicker {
    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        let total = *self.sums.last()?;
        let r = random() % total;
        let i = self.sums.partition_point(|&s| s <= r);
        first_usable(pick, i)
    }
}

/// Consistent hashing on the key the caller gives per call (`Client::with_key`): calls
/// with one key go to one instance while it is usable. Each instance has points on a
/// ring in proportion to its weight (160 at the default weight of 10), so when one of N
/// instances leaves or joins, about 1/N of the keys move. Calls without a key go to a
/// random instance.
#[derive(Debug, Clone, Copy)]
pub struct ConsistentHash {
    points_per_weight: u32,
}

impl Default for ConsistentHash {
    fn default() -> Self {
        ConsistentHash {
            points_per_weight: 16,
        }
    }
}

struct HashPicker {
    /// (point, instance), sorted by point.
    ring: Vec<(u64, usize)>,
    n: usize,
}

/// A 64-bit mix (splitmix64's finalizer): spreads keys that differ in few bits.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl LoadBalancer for ConsistentHash {
    fn name(&self) -> &'static str {
        "hash"
    }

    fn picker(&self, instances: Arc<[Instance]>) -> Box<dyn Picker> {
        let mut ring = Vec::new();
        for (idx, inst) in instances.iter().enumerate() {
            // Points depend on the address only, so an instance keeps its points when
            // others come and go.
            let mut h = std::collections::hash_map::DefaultHasher::new();
            // A TCP instance hashes as its socket address did before Unix sockets, so
            // that clients of both versions agree on the ring during a rollout.
            match &inst.addr {
                crate::discovery::Addr::Tcp(a) => a.hash(&mut h),
                unix => unix.hash(&mut h),
            }
            let base = h.finish();
            // Weights are capped so that one instance cannot blow the ring up.
            let points = inst.weight.clamp(1, 1000) * self.points_per_weight;
            for p in 0..points as u64 {
                ring.push((mix(base ^ mix(p + 1)), idx));
            }
        }
        ring.sort_unstable();
        Box::new(HashPicker {
            ring,
            n: instances.len(),
        })
    }
}

impl Picker for HashPicker {
    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        let Some(key) = pick.key else {
            return first_usable(pick, below(self.n.max(1)));
        };
        let h = mix(key);
        let start = self.ring.partition_point(|&(p, _)| p < h);
        let len = self.ring.len();
        (0..len)
            .map(|i| self.ring[(start + i) % len].1)
            .find(|&i| pick.usable(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Load;
    use crate::wire::{Payload, Transport};
    use crate::{CallInfo, Side};
    use std::time::Duration;

    fn info() -> CallInfo<'static> {
        CallInfo {
            side: Side::Client,
            service: "s",
            method: "m",
            transport: Transport::Framed,
            payload: Payload::ThriftBinary,
            peer: None,
            seq_id: 0,
            request_bytes: 0,
            start: std::time::Instant::now(),
            deadline: None,
            headers: None,
            trace: None,
        }
    }

    fn instances(weights: &[u32]) -> Arc<[Instance]> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Instance {
                weight: w,
                ..Instance::new(
                    format!("10.0.0.{}:80", i + 1)
                        .parse::<std::net::SocketAddr>()
                        .unwrap(),
                )
            })
            .collect()
    }

    fn counts(lb: &dyn LoadBalancer, weights: &[u32], loads: &[Load], n: usize) -> Vec<usize> {
        let p = lb.picker(instances(weights));
        let call = info();
        let mut c = vec![0; weights.len()];
        for _ in 0..n {
            c[p.pick(&Pick::for_test(&call, None, loads)).unwrap()] += 1;
        }
        c
    }

    const IDLE: Load = Load {
        in_flight: 0,
        latency: Duration::ZERO,
    };

    #[test]
    fn smooth_wrr_gives_each_its_weight_interleaved() {
        let p = WeightedRoundRobin.picker(instances(&[5, 1, 1]));
        let call = info();
        let loads = [IDLE; 3];
        let seq: Vec<usize> = (0..7)
            .map(|_| p.pick(&Pick::for_test(&call, None, &loads)).unwrap())
            .collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0], "nginx's smooth order");
    }

    #[test]
    fn random_follows_weights() {
        let c = counts(&WeightedRandom, &[30, 10], &[IDLE; 2], 40_000);
        let share = c[0] as f64 / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "{c:?}");
    }

    #[test]
    fn p2c_prefers_the_less_loaded_and_faster() {
        let slow = Load {
            in_flight: 5,
            latency: Duration::from_millis(20),
        };
        let fast = Load {
            in_flight: 0,
            latency: Duration::from_millis(1),
        };
        let c = counts(&P2c, &[10, 10, 10], &[slow, fast, fast], 30_000);
        // The slow one wins only when drawn twice... which p2c never does: it draws two
        // distinct instances, so it never picks the slow one against a fast one.
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1] > 10_000 && c[2] > 10_000, "{c:?}");
    }

    #[test]
    fn consistent_hash_keeps_keys_and_moves_few_when_one_leaves() {
        let keys = 20_000u64;
        let n = 10;
        let all = instances(&vec![10; n]);
        let call = info();
        let loads = vec![IDLE; n];
        let p = ConsistentHash::default().picker(all.clone());
        let before: Vec<usize> = (0..keys)
            .map(|k| p.pick(&Pick::for_test(&call, Some(k), &loads)).unwrap())
            .collect();
        // The same key always lands on the same instance.
        for k in 0..100 {
            assert_eq!(
                p.pick(&Pick::for_test(&call, Some(k), &loads)).unwrap(),
                before[k as usize]
            );
        }
        // Instance 3 leaves.
        let rest: Arc<[Instance]> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .map(|(_, x)| x.clone())
            .collect();
        let p2 = ConsistentHash::default().picker(rest.clone());
        let moved = (0..keys)
            .filter(|&k| {
                let now = p2
                    .pick(&Pick::for_test(&call, Some(k), &loads[..n - 1]))
                    .unwrap();
                rest[now].addr != all[before[k as usize]].addr
            })
            .count();
        let limit = 1.2 / n as f64 * keys as f64;
        assert!(
            (moved as f64) <= limit,
            "{moved} of {keys} keys moved, more than 1.2/N"
        );
        // Only the keys of the instance that left moved.
        let of_three = before.iter().filter(|&&i| i == 3).count();
        assert_eq!(moved, of_three);
    }
}
