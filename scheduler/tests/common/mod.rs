//! Helpers shared by the scheduler's integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;

use flotilla_scheduler::{ClusterView, Node, Plan, Replica, Resources};

/// Mebibytes.
pub const MIB: u64 = 1 << 20;

/// A ready aarch64 node with `cpu` millicores and `mem` MiB, 16 slots.
pub fn node(id: &str, cpu: u64, mem: u64) -> Node {
    Node::new(id, Resources::new(cpu, mem * MIB), 16)
}

/// A replica of workload `wl` requesting `cpu` millicores and `mem` MiB.
pub fn replica(id: &str, wl: &str, cpu: u64, mem: u64) -> Replica {
    Replica::new(id, wl, Resources::new(cpu, mem * MIB))
}

/// Node id per placed replica id.
pub fn placed(plan: &Plan) -> BTreeMap<String, String> {
    plan.placements.iter().map(|p| (p.replica.0.to_string(), p.node.0.to_string())).collect()
}

/// Checks that the plan pushes no node over its allocatable in any
/// dimension, counting bound replicas. (Bound load alone may already exceed
/// a shrunken allocatable; then the plan must add nothing in that
/// dimension.) Returns a description of the first violation.
pub fn overcommit(view: &ClusterView, pending: &[Replica], plan: &Plan) -> Option<String> {
    type Load = BTreeMap<String, u64>;
    let mut bound: BTreeMap<&str, Load> = BTreeMap::new();
    let mut added: BTreeMap<&str, Load> = BTreeMap::new();
    let dims = |r: &Replica| {
        let mut d: Vec<(String, u64)> = vec![
            ("cpu".into(), r.requests.cpu_millis),
            ("memory".into(), r.requests.memory_bytes),
            ("workloads".into(), 1),
        ];
        d.extend(r.requests.extended.iter().map(|(k, v)| (k.clone(), *v)));
        d
    };
    let present: BTreeMap<&str, &Node> = view.nodes.iter().map(|n| (n.id.as_str(), &**n)).collect();
    for b in &view.bound {
        if let Some((id, _)) = present.get_key_value(b.node.as_str()) {
            let e = bound.entry(id).or_default();
            for (k, v) in dims(&b.replica) {
                *e.entry(k).or_default() += v;
            }
        }
    }
    let by_id: BTreeMap<&str, &Replica> = pending.iter().map(|r| (r.id.as_str(), r)).collect();
    for p in &plan.placements {
        let e = added.entry(p.node.as_str()).or_default();
        for (k, v) in dims(by_id[p.replica.as_str()]) {
            *e.entry(k).or_default() += v;
        }
    }
    for (id, add) in &added {
        let n = present[id];
        for (k, v) in add {
            let cap = match k.as_str() {
                "cpu" => n.allocatable.cpu_millis,
                "memory" => n.allocatable.memory_bytes,
                "workloads" => u64::from(n.max_workloads),
                ext => n.allocatable.extended.get(ext).copied().unwrap_or(0),
            };
            let before = bound.get(id).and_then(|b| b.get(k)).copied().unwrap_or(0);
            if *v > 0 && before + v > cap {
                return Some(format!("{id}: {k} {before} + {v} > {cap}"));
            }
        }
    }
    None
}

/// Tiny deterministic generator for building instances.
pub struct Gen(pub u64);

impl Gen {
    /// Next value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        lo + (z ^ (z >> 31)) % (hi - lo + 1)
    }
}

/// A Falkenauer-style triplet instance whose optimum is `bins` by
/// construction: every bin of capacity 1000 holds three items that fill it
/// exactly. With `two_d`, memory gets an independent triplet split of the
/// same grouping, so both dimensions are exactly full.
pub fn triplets(bins: usize, seed: u64, two_d: bool) -> (ClusterView, Vec<Replica>) {
    let mut g = Gen(seed);
    let split = |g: &mut Gen| {
        let a = g.range(380, 490);
        let b = g.range(250, 1000 - a - 250);
        [a, b, 1000 - a - b]
    };
    let mut pending = Vec::new();
    for bin in 0..bins {
        let cpu = split(&mut g);
        let mem = if two_d { split(&mut g) } else { [0; 3] };
        for k in 0..3 {
            let id = format!("item-{bin:03}-{k}");
            pending.push(Replica::new(&id, &id, Resources::new(cpu[k], mem[k])));
        }
    }
    // Shuffle so that the construction's grouping is not the input order.
    for i in (1..pending.len()).rev() {
        let j = g.range(0, i as u64) as usize;
        pending.swap(i, j);
    }
    let cap = Resources::new(1000, if two_d { 1000 } else { 0 });
    let nodes = (0..pending.len()).map(|i| Node::new(&format!("node-{i:03}"), cap.clone(), 64));
    (ClusterView::new(nodes, Vec::new()), pending)
}
