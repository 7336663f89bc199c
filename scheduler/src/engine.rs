//! The placement engine: compiled cluster state, the capacity index, and
//! best-fit-decreasing placement of one batch.
//!
//! Three caches make a placement cost independent of fleet size:
//!
//! - **Pools.** Nodes with identical attributes as far as the pending
//!   replicas can tell (readiness, arch/os, the label keys some selector or
//!   spread names, taints, allocatable) form a pool. A 10,000-node fleet of
//!   a few board types has a few dozen pools.
//! - **Classes.** Pending replicas with identical placement constraints
//!   (arch/os, selector, tolerations, topology key, extended resources
//!   named) form a class. Static filters run once per (class, pool).
//! - **Capacity grid.** Inside a large pool, nodes sit in a 64 x 64 grid of
//!   buckets by free cpu and free memory (as fractions of the pool's
//!   allocatable). One `u64` per row marks the non-empty buckets, so the
//!   fullest bucket that can fit a request is found with a few bit scans;
//!   exact filters then run on a handful of nodes in it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::filter::{check_dynamic, check_static, passes_dynamic};
use crate::model::{ClusterView, Node, Replica, ScoreMode, Taint, TaintEffect, WorkloadId};
use crate::reason::{Unplaceable, UnplacedReason};
use crate::score::{PREFER_NO_SCHEDULE_PENALTY, rank};

/// Buckets per grid dimension: one `u64` bitmask per row.
const Q: usize = 64;
/// Pools smaller than this are scanned linearly: a grid would cost more
/// memory than it saves time.
const GRID_MIN_NODES: usize = 32;
/// Marks a node that is not in its pool's grid (full, or pool is flat).
const NO_CELL: u16 = u16::MAX;
/// Exact scores compared within the winning bucket; nodes in one bucket
/// differ by less than 1/64 of capacity per dimension, so a few suffice.
const CELL_CANDIDATES: usize = 4;

/// Mutable per-node accounting.
pub(crate) struct NodeState {
    /// Allocatable cpu.
    pub alloc_cpu: u64,
    /// Allocatable memory.
    pub alloc_mem: u64,
    /// Cpu used by bound and placed replicas.
    pub used_cpu: u64,
    /// Memory used by bound and placed replicas.
    pub used_mem: u64,
    /// Allocatable extended resources, indexed like `State::ext_names`.
    pub alloc_ext: Box<[u64]>,
    /// Used extended resources.
    pub used_ext: Box<[u64]>,
    /// Workload slots.
    pub max_workloads: u32,
    /// Replicas on the node.
    pub workloads: u32,
    /// Replicas on the node before this batch.
    pub workloads_before: u32,
    /// Pool index, `u32::MAX` for a duplicate node id (never placed on).
    pub pool: u32,
    /// Grid bucket, or `NO_CELL`.
    cell: u16,
    /// Position inside the bucket.
    slot: u32,
}

/// A pending replica compiled for the hot loop.
pub(crate) struct Req {
    /// Requested cpu.
    pub cpu: u64,
    /// Requested memory.
    pub mem: u64,
    /// Requested extended resources (index, amount).
    pub ext: Vec<(u16, u64)>,
    /// Interned workload.
    pub workload: u32,
    /// Constraint class.
    pub class: u32,
    /// Anti-affinity limit.
    pub max_per_node: Option<u32>,
    /// Index into `State::spreads`.
    pub spread: Option<u32>,
    /// Ranking.
    pub mode: ScoreMode,
    /// Index into the caller's pending slice.
    pub pending: usize,
    /// Size relative to the largest node, for "decreasing" orders.
    pub size: f64,
}

/// Topology spread bookkeeping for one workload.
pub(crate) struct SpreadState {
    /// Label key.
    pub key: String,
    /// Allowed skew.
    pub max_skew: u32,
    /// Eligible domains (label values), sorted.
    pub domains: Vec<String>,
    /// Replicas of the workload per domain.
    pub counts: Vec<u32>,
    /// Domain per pool (`u32::MAX`: not eligible). The topology key is part
    /// of the pool key, so every node of a pool is in the same domain.
    pool_domain: Vec<u32>,
}

impl SpreadState {
    /// Domain of node `n`, if it is eligible.
    #[inline]
    pub fn domain_of(&self, st: &State<'_>, n: usize) -> Option<usize> {
        self.domain_of_pool(st.nodes[n].pool as usize)
    }

    /// Domain of pool `p`, if it is eligible.
    #[inline]
    pub fn domain_of_pool(&self, p: usize) -> Option<usize> {
        match self.pool_domain.get(p) {
            Some(&d) if d != u32::MAX => Some(d as usize),
            _ => None,
        }
    }

    /// Replicas in the emptiest eligible domain.
    pub fn min_count(&self) -> u32 {
        self.counts.iter().copied().min().unwrap_or(0)
    }
}

/// The capacity index of one large pool.
struct Grid {
    /// Bit `r` set when row `r` has a non-empty bucket.
    rows: u64,
    /// Per row, bit `c` set when bucket `(r, c)` is non-empty.
    row_bits: Vec<u64>,
    /// `Q * Q` buckets of node indices.
    cells: Vec<Vec<u32>>,
}

/// Nodes indistinguishable to this batch's constraints.
pub(crate) struct Pool {
    /// A member whose attributes stand for all.
    rep: usize,
    /// All members, in view order.
    members: Vec<u32>,
    alloc_cpu: u64,
    alloc_mem: u64,
    grid: Option<Grid>,
}

/// Replicas with identical constraints, and the pools they may use.
pub(crate) struct Class {
    /// Feasible pools with their soft-taint penalty, penalty-free first.
    pub pools: Vec<(u32, f64)>,
}

/// Everything the placement loop reads and updates.
pub(crate) struct State<'a> {
    /// The caller's nodes.
    pub view_nodes: &'a [std::sync::Arc<Node>],
    /// Accounting, parallel to `view_nodes`.
    pub nodes: Vec<NodeState>,
    /// Pools.
    pub pools: Vec<Pool>,
    /// Constraint classes.
    pub classes: Vec<Class>,
    /// Extended resources named by pending replicas.
    pub ext_names: Vec<String>,
    /// Interned workloads of pending replicas.
    pub workload_names: Vec<WorkloadId>,
    /// Whether a workload's per-node counts are kept (it has constraints
    /// or spreads); others skip the bookkeeping.
    tracked: Vec<bool>,
    /// Replicas per (workload, node) for tracked workloads.
    per_node: HashMap<(u32, u32), u32>,
    /// Topology spreads.
    pub spreads: Vec<SpreadState>,
    /// Bumped on every placement; keys the reason cache.
    version: u64,
}

impl State<'_> {
    /// Replicas of `workload` on node `n` (0 for untracked workloads).
    #[inline]
    pub fn same_workload(&self, workload: u32, n: usize) -> u32 {
        if !self.tracked[workload as usize] {
            return 0;
        }
        self.per_node.get(&(workload, n as u32)).copied().unwrap_or(0)
    }

    /// Allocatable of the largest node per dimension (at least 1).
    pub fn max_alloc(&self) -> (u64, u64) {
        let c = self.nodes.iter().map(|n| n.alloc_cpu).max().unwrap_or(0);
        let m = self.nodes.iter().map(|n| n.alloc_mem).max().unwrap_or(0);
        (c.max(1), m.max(1))
    }

    /// Whether class `class` may use node `n` at all (static filters).
    pub fn class_allows(&self, class: u32, n: usize) -> Option<f64> {
        let pool = self.nodes[n].pool;
        self.classes[class as usize].pools.iter().find(|(p, _)| *p == pool).map(|&(_, pen)| pen)
    }

    /// Adds (`sign = true`) or removes a replica's usage on node `n`,
    /// keeping every index current.
    pub fn account(&mut self, n: usize, req: &Req, add: bool) {
        let node = &mut self.nodes[n];
        if add {
            node.used_cpu += req.cpu;
            node.used_mem += req.mem;
            node.workloads += 1;
            for &(k, a) in &req.ext {
                node.used_ext[k as usize] += a;
            }
        } else {
            node.used_cpu -= req.cpu;
            node.used_mem -= req.mem;
            node.workloads -= 1;
            for &(k, a) in &req.ext {
                node.used_ext[k as usize] -= a;
            }
        }
        if self.tracked[req.workload as usize] {
            let c = self.per_node.entry((req.workload, n as u32)).or_insert(0);
            if add {
                *c += 1;
            } else {
                *c -= 1;
            }
        }
        if let Some(s) = req.spread
            && let Some(d) = self.spreads[s as usize].domain_of(self, n)
        {
            let c = &mut self.spreads[s as usize].counts[d];
            if add {
                *c += 1;
            } else {
                *c -= 1;
            }
        }
        self.version += 1;
        self.regrid(n);
    }

    /// Bucket of node `n` for its current free capacity.
    fn cell_of(&self, n: usize) -> u16 {
        let node = &self.nodes[n];
        if node.workloads >= node.max_workloads {
            return NO_CELL;
        }
        let r = quantize(node.alloc_cpu.saturating_sub(node.used_cpu), node.alloc_cpu);
        let c = quantize(node.alloc_mem.saturating_sub(node.used_mem), node.alloc_mem);
        (r * Q + c) as u16
    }

    /// Moves node `n` to the bucket matching its free capacity.
    fn regrid(&mut self, n: usize) {
        let pool = self.nodes[n].pool as usize;
        if pool >= self.pools.len() || self.pools[pool].grid.is_none() {
            return;
        }
        let new = self.cell_of(n);
        let old = self.nodes[n].cell;
        if new == old {
            return;
        }
        let grid = self.pools[pool].grid.as_mut().expect("checked above");
        if old != NO_CELL {
            let cell = &mut grid.cells[old as usize];
            let slot = self.nodes[n].slot as usize;
            cell.swap_remove(slot);
            if let Some(&moved) = cell.get(slot) {
                self.nodes[moved as usize].slot = slot as u32;
            }
            if cell.is_empty() {
                let (r, c) = (old as usize / Q, old as usize % Q);
                grid.row_bits[r] &= !(1 << c);
                if grid.row_bits[r] == 0 {
                    grid.rows &= !(1 << r);
                }
            }
        }
        if new != NO_CELL {
            let cell = &mut grid.cells[new as usize];
            self.nodes[n].slot = cell.len() as u32;
            cell.push(n as u32);
            let (r, c) = (new as usize / Q, new as usize % Q);
            grid.row_bits[r] |= 1 << c;
            grid.rows |= 1 << r;
        }
        self.nodes[n].cell = new;
    }
}

/// Bucket of `free` out of `alloc`: monotone in `free`, so a node whose
/// bucket is below the request's bucket cannot fit it.
#[inline]
fn quantize(free: u64, alloc: u64) -> usize {
    if alloc == 0 {
        return 0;
    }
    ((u128::from(free) * Q as u128) / (u128::from(alloc) + 1)) as usize
}

/// Node attributes that decide static feasibility for this batch.
#[derive(PartialEq, Eq, Hash)]
struct PoolKey<'a> {
    ready: bool,
    compact: bool,
    arch: &'a str,
    os: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    taints: &'a [Taint],
    cpu: u64,
    mem: u64,
    ext: Vec<u64>,
    max_workloads: u32,
}

/// Replica attributes that decide static feasibility.
#[derive(PartialEq, Eq, Hash)]
struct ClassKey<'a> {
    arch: Option<&'a str>,
    exceeds_compact: Option<&'a str>,
    os: Option<&'a str>,
    selector: &'a BTreeMap<String, String>,
    tolerations: &'a [crate::model::Toleration],
    topology_key: Option<&'a str>,
    ext: Vec<u16>,
}

/// Compiles the view and the pending replicas; returns the state and the
/// replicas to place (bound or duplicate ids dropped), in input order.
pub(crate) fn compile<'a>(view: &'a ClusterView, pending: &'a [Replica]) -> (State<'a>, Vec<Req>) {
    let nodes_in = &view.nodes[..];

    // Only label keys some pending replica names can tell nodes apart.
    let mut label_keys: BTreeSet<&str> = BTreeSet::new();
    let mut ext_set: BTreeSet<&str> = BTreeSet::new();
    for r in pending {
        label_keys.extend(r.node_selector.keys().map(String::as_str));
        if let Some(ts) = &r.topology_spread {
            label_keys.insert(&ts.key);
        }
        ext_set.extend(r.requests.extended.keys().map(String::as_str));
    }
    let ext_names: Vec<String> = ext_set.iter().map(|s| (*s).to_owned()).collect();
    let ext_index: HashMap<&str, u16> = ext_set.iter().enumerate().map(|(i, s)| (*s, i as u16)).collect();

    // Workloads of pending replicas; constrained ones get per-node counts.
    let mut workload_index: HashMap<&str, u32> = HashMap::new();
    let mut workload_names = Vec::new();
    let mut tracked = Vec::new();
    for r in pending {
        let w = *workload_index.entry(r.workload.as_str()).or_insert_with(|| {
            workload_names.push(r.workload.clone());
            tracked.push(false);
            (workload_names.len() - 1) as u32
        });
        if r.max_per_node.is_some() || r.topology_spread.is_some() || r.score_mode == ScoreMode::Spread {
            tracked[w as usize] = true;
        }
    }

    // Node accounting, pools.
    let mut node_index: HashMap<&str, usize> = HashMap::with_capacity(nodes_in.len());
    let mut pool_index: HashMap<PoolKey<'_>, u32> = HashMap::new();
    let mut pools: Vec<Pool> = Vec::new();
    let mut nodes = Vec::with_capacity(nodes_in.len());
    for (i, n) in nodes_in.iter().enumerate() {
        let alloc_ext: Box<[u64]> =
            ext_names.iter().map(|k| n.allocatable.extended.get(k).copied().unwrap_or(0)).collect();
        let pool = if let Some(first) = node_index.insert(n.id.as_str(), i) {
            // First entry wins; a duplicate id is never placed on.
            node_index.insert(n.id.as_str(), first);
            u32::MAX
        } else {
            let key = PoolKey {
                ready: n.ready,
                compact: n.compact_profile,
                arch: &n.arch,
                os: &n.os,
                labels: label_keys
                    .iter()
                    .filter_map(|k| n.labels.get_key_value(*k))
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
                taints: &n.taints,
                cpu: n.allocatable.cpu_millis,
                mem: n.allocatable.memory_bytes,
                ext: alloc_ext.to_vec(),
                max_workloads: n.max_workloads,
            };
            let p = *pool_index.entry(key).or_insert_with(|| {
                pools.push(Pool {
                    rep: i,
                    members: Vec::new(),
                    alloc_cpu: n.allocatable.cpu_millis,
                    alloc_mem: n.allocatable.memory_bytes,
                    grid: None,
                });
                (pools.len() - 1) as u32
            });
            pools[p as usize].members.push(i as u32);
            p
        };
        nodes.push(NodeState {
            alloc_cpu: n.allocatable.cpu_millis,
            alloc_mem: n.allocatable.memory_bytes,
            used_cpu: 0,
            used_mem: 0,
            used_ext: vec![0; alloc_ext.len()].into_boxed_slice(),
            alloc_ext,
            max_workloads: n.max_workloads,
            workloads: 0,
            workloads_before: 0,
            pool,
            cell: NO_CELL,
            slot: 0,
        });
    }

    // Bound replicas occupy resources; those on unknown nodes are ignored.
    let mut per_node: HashMap<(u32, u32), u32> = HashMap::new();
    let mut bound_ids: HashSet<&str> = HashSet::with_capacity(view.bound.len());
    let mut bound_on: Vec<(usize, &Replica)> = Vec::new();
    for b in &view.bound {
        bound_ids.insert(b.replica.id.as_str());
        let Some(&n) = node_index.get(b.node.as_str()) else { continue };
        let node = &mut nodes[n];
        node.used_cpu = node.used_cpu.saturating_add(b.replica.requests.cpu_millis);
        node.used_mem = node.used_mem.saturating_add(b.replica.requests.memory_bytes);
        node.workloads += 1;
        node.workloads_before += 1;
        for (k, a) in &b.replica.requests.extended {
            if let Some(&e) = ext_index.get(k.as_str()) {
                node.used_ext[e as usize] = node.used_ext[e as usize].saturating_add(*a);
            }
        }
        if let Some(&w) = workload_index.get(b.replica.workload.as_str())
            && tracked[w as usize]
        {
            *per_node.entry((w, n as u32)).or_insert(0) += 1;
            bound_on.push((n, &b.replica));
        }
    }

    let mut st = State {
        view_nodes: nodes_in,
        nodes,
        pools,
        classes: Vec::new(),
        ext_names,
        workload_names,
        tracked,
        per_node,
        spreads: Vec::new(),
        version: 0,
    };

    // Classes and compiled requests.
    let (max_c, max_m) = st.max_alloc();
    let mut class_index: HashMap<ClassKey<'_>, u32> = HashMap::new();
    let mut spread_of_workload: HashMap<u32, u32> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::with_capacity(pending.len());
    let mut reqs = Vec::with_capacity(pending.len());
    for (i, r) in pending.iter().enumerate() {
        // Placing an already-placed (or repeated) replica is a no-op.
        if bound_ids.contains(r.id.as_str()) || !seen.insert(r.id.as_str()) {
            continue;
        }
        let ext: Vec<(u16, u64)> =
            r.requests.extended.iter().filter(|(_, a)| **a > 0).map(|(k, a)| (ext_index[k.as_str()], *a)).collect();
        let key = ClassKey {
            arch: r.arch.as_deref(),
            exceeds_compact: r.exceeds_compact.as_deref(),
            os: r.os.as_deref(),
            selector: &r.node_selector,
            tolerations: &r.tolerations,
            topology_key: r.topology_spread.as_ref().map(|t| t.key.as_str()),
            ext: ext.iter().map(|(k, _)| *k).collect(),
        };
        let class = match class_index.get(&key) {
            Some(&c) => c,
            None => {
                let c = st.classes.len() as u32;
                let class = build_class(&st, r, &key.ext);
                st.classes.push(class);
                class_index.insert(key, c);
                c
            }
        };
        let workload = workload_index[r.workload.as_str()];
        let spread = r.topology_spread.as_ref().map(|ts| {
            *spread_of_workload.entry(workload).or_insert_with(|| {
                let mut domains: Vec<String> = st.classes[class as usize]
                    .pools
                    .iter()
                    .filter_map(|(p, _)| st.view_nodes[st.pools[*p as usize].rep].labels.get(&ts.key).cloned())
                    .collect();
                domains.sort();
                domains.dedup();
                let index: HashMap<&String, u32> = domains.iter().enumerate().map(|(d, v)| (v, d as u32)).collect();
                let pool_domain = st
                    .pools
                    .iter()
                    .map(|p| {
                        st.view_nodes[p.rep].labels.get(&ts.key).and_then(|v| index.get(v).copied()).unwrap_or(u32::MAX)
                    })
                    .collect();
                st.spreads.push(SpreadState {
                    key: ts.key.clone(),
                    max_skew: ts.max_skew,
                    counts: vec![0; domains.len()],
                    domains,
                    pool_domain,
                });
                (st.spreads.len() - 1) as u32
            })
        });
        let (cpu, mem) = (r.requests.cpu_millis, r.requests.memory_bytes);
        reqs.push(Req {
            cpu,
            mem,
            ext,
            workload,
            class,
            max_per_node: r.max_per_node,
            spread,
            mode: r.score_mode,
            pending: i,
            size: cpu as f64 / max_c as f64 + mem as f64 / max_m as f64,
        });
    }

    // Spread counts from bound replicas, now that domains are known.
    for (n, r) in bound_on {
        let w = workload_index[r.workload.as_str()];
        if let Some(&s) = spread_of_workload.get(&w)
            && let Some(d) = st.spreads[s as usize].domain_of(&st, n)
        {
            st.spreads[s as usize].counts[d] += 1;
        }
    }

    // Grids for large pools.
    for p in 0..st.pools.len() {
        if st.pools[p].members.len() >= GRID_MIN_NODES {
            st.pools[p].grid =
                Some(Grid { rows: 0, row_bits: vec![0; Q], cells: (0..Q * Q).map(|_| Vec::new()).collect() });
            for m in 0..st.pools[p].members.len() {
                let n = st.pools[p].members[m] as usize;
                st.regrid(n);
            }
        }
    }
    (st, reqs)
}

/// Runs the static filters for one class on each pool's representative.
fn build_class(st: &State<'_>, r: &Replica, ext: &[u16]) -> Class {
    let mut pools: Vec<(u32, f64)> = Vec::new();
    for (p, pool) in st.pools.iter().enumerate() {
        let node = &st.view_nodes[pool.rep];
        // An extended resource the pool does not offer at all is static.
        let has_ext = ext.iter().all(|&k| st.nodes[pool.rep].alloc_ext[k as usize] > 0);
        if has_ext && check_static(node, r).is_ok() {
            pools.push((p as u32, soft_taint_penalty(node, r)));
        }
    }
    // Stable: view order within equal penalties.
    pools.sort_by(|a, b| a.1.total_cmp(&b.1));
    Class { pools }
}

/// `PREFER_NO_SCHEDULE_PENALTY` if the node has an untolerated soft taint.
fn soft_taint_penalty(node: &Node, r: &Replica) -> f64 {
    let untolerated = node
        .taints
        .iter()
        .any(|t| t.effect == TaintEffect::PreferNoSchedule && !r.tolerations.iter().any(|tol| tol.tolerates(t)));
    if untolerated { PREFER_NO_SCHEDULE_PENALTY } else { 0.0 }
}

/// Best node so far: (score, node). Ties go to the lower node index, which
/// keeps the result independent of bucket order.
type Best = Option<(f64, usize)>;

#[inline]
fn offer(best: &mut Best, score: f64, n: usize) {
    let better = match *best {
        None => true,
        Some((s, m)) => score < s || (score == s && n < m),
    };
    if better {
        *best = Some((score, n));
    }
}

/// Scans one bucket; returns whether any node in it passed.
#[inline]
fn scan_cell(st: &State<'_>, cell: &[u32], req: &Req, pen: f64, best: &mut Best) -> bool {
    let mut found = 0;
    for &n in cell {
        let n = n as usize;
        if passes_dynamic(st, n, req) {
            offer(best, rank(st, n, req, pen), n);
            found += 1;
            if found == CELL_CANDIDATES {
                break;
            }
        }
    }
    found > 0
}

/// Offers the best node of `pool` for `req` to `best`.
fn search_pool(st: &State<'_>, p: usize, req: &Req, pen: f64, best: &mut Best) {
    let pool = &st.pools[p];
    if req.cpu > pool.alloc_cpu || req.mem > pool.alloc_mem {
        return;
    }
    let Some(grid) = &pool.grid else {
        for &n in &pool.members {
            let n = n as usize;
            if passes_dynamic(st, n, req) {
                offer(best, rank(st, n, req, pen), n);
            }
        }
        return;
    };
    let qc = quantize(req.cpu, pool.alloc_cpu);
    let qm = quantize(req.mem, pool.alloc_mem);
    let col_mask = !0u64 << qm;
    let mut rows = grid.rows & (!0u64 << qc);
    match req.mode {
        // Fullest bucket first: smallest row + column. Rows are visited in
        // increasing order and abandoned once they cannot beat the best.
        ScoreMode::BinPack => {
            let mut best_sum = usize::MAX;
            while rows != 0 {
                let r = rows.trailing_zeros() as usize;
                rows &= rows - 1;
                if r + qm > best_sum {
                    break;
                }
                let mut cols = grid.row_bits[r] & col_mask;
                while cols != 0 {
                    let c = cols.trailing_zeros() as usize;
                    cols &= cols - 1;
                    if r + c > best_sum {
                        break;
                    }
                    if scan_cell(st, &grid.cells[r * Q + c], req, pen, best) {
                        best_sum = r + c;
                        break;
                    }
                }
            }
        }
        // Emptiest bucket first: the mirror image.
        ScoreMode::Spread => {
            let mut best_sum: Option<usize> = None;
            while rows != 0 {
                let r = 63 - rows.leading_zeros() as usize;
                rows &= !(1u64 << r);
                if best_sum.is_some_and(|b| r + Q - 1 < b) {
                    break;
                }
                let mut cols = grid.row_bits[r] & col_mask;
                while cols != 0 {
                    let c = 63 - cols.leading_zeros() as usize;
                    cols &= !(1u64 << c);
                    if best_sum.is_some_and(|b| r + c < b) {
                        break;
                    }
                    if scan_cell(st, &grid.cells[r * Q + c], req, pen, best) {
                        best_sum = Some(r + c);
                        break;
                    }
                }
            }
        }
    }
}

/// The best feasible node for `req`, if any.
pub(crate) fn best_node(st: &State<'_>, req: &Req) -> Option<usize> {
    let mut best: Best = None;
    for &(p, pen) in &st.classes[req.class as usize].pools {
        // Pools are sorted penalty-free first: a penalised pool cannot beat
        // any penalty-free candidate.
        if pen > 0.0 && best.is_some_and(|(s, _)| s < PREFER_NO_SCHEDULE_PENALTY) {
            break;
        }
        // Topology skew is a property of the pool's domain: skip the whole
        // pool rather than reject its nodes one by one.
        if let Some(s) = req.spread {
            let sp = &st.spreads[s as usize];
            match sp.domain_of_pool(p as usize) {
                Some(d) if sp.counts[d] < sp.min_count() + sp.max_skew => {}
                _ => continue,
            }
        }
        search_pool(st, p as usize, req, pen, &mut best);
    }
    best.map(|(_, n)| n)
}

/// Why no node takes `req`: every node's first failing filter.
pub(crate) fn explain(st: &State<'_>, replica: &Replica, req: &Req) -> UnplacedReason {
    let rejections = st.view_nodes.iter().enumerate().filter_map(|(n, node)| {
        let verdict = if st.nodes[n].pool == u32::MAX {
            // A duplicate entry of a node id: the first entry speaks for it.
            return None;
        } else {
            check_static(node, replica).and_then(|()| check_dynamic(st, n, req))
        };
        verdict.err().map(|reason| Unplaceable { node: node.id.clone(), reason })
    });
    let mut reason = UnplacedReason::from_rejections(0, rejections);
    reason.nodes_total = st.nodes.iter().filter(|n| n.pool != u32::MAX).count();
    reason
}

/// Caches the last reason: replicas of one workload are adjacent in the
/// placement order and, while nothing is placed in between, share it.
#[derive(Default)]
pub(crate) struct ReasonCache {
    last: Option<(CacheKey, UnplacedReason)>,
}

/// State version, class, workload, cpu, memory, extended requests.
type CacheKey = (u64, u32, u32, u64, u64, Vec<(u16, u64)>);

impl ReasonCache {
    /// The reason for `req`, computed or reused.
    pub fn get(&mut self, st: &State<'_>, replica: &Replica, req: &Req) -> UnplacedReason {
        let key: CacheKey = (st.version, req.class, req.workload, req.cpu, req.mem, req.ext.clone());
        if let Some((k, reason)) = &self.last
            && *k == key
        {
            return reason.clone();
        }
        let reason = explain(st, replica, req);
        self.last = Some((key, reason.clone()));
        reason
    }
}
