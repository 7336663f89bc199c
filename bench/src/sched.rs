//! `flotilla-bench sched`: scheduler throughput (issue #5).
//!
//! Generates a realistic mixed fleet from a seed (several board sizes,
//! zones and roles as labels, dedicated and soft taints, a few nodes not
//! ready, some armv7 boards) and a batch of pending replicas from many
//! workloads (2-D requests, nodeSelectors with tolerations, arch
//! requirements, anti-affinity, topology spread, spread scoring,
//! priorities), then times one `schedule` call. The scheduler is single
//! threaded; pin the process (`taskset -c 0`) to measure one core.

use std::time::Instant;

use flotilla_scheduler::{ClusterView, Node, Replica, Resources, ScoreMode, Taint, TaintEffect, Toleration, schedule};
use serde_json::json;

/// Options of `flotilla-bench sched`.
#[derive(Debug, clap::Args)]
pub struct SchedArgs {
    /// Number of nodes in the fleet.
    #[arg(long, default_value_t = 10_000)]
    pub nodes: usize,
    /// Number of pending replicas to place.
    #[arg(long, default_value_t = 100_000)]
    pub replicas: usize,
    /// Seed for the fleet generator and the scheduler.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// SplitMix64: a tiny deterministic generator, so the fleet is a function of the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

const MIB: u64 = 1 << 20;
const ZONES: [&str; 4] = ["z0", "z1", "z2", "z3"];

/// The fleet: board types from a 512 MB gateway to an 8 GB edge server.
fn fleet(rng: &mut Rng, n: usize) -> Vec<Node> {
    // (cpu millis, memory, max workloads, share in percent)
    const BOARDS: [(u64, u64, u32, u64); 4] = [
        (1_000, 512 * MIB, 8, 20),
        (2_000, 1_024 * MIB, 16, 30),
        (4_000, 4_096 * MIB, 32, 35),
        (8_000, 8_192 * MIB, 64, 15),
    ];
    (0..n)
        .map(|i| {
            let mut pick = rng.below(100);
            let board = BOARDS
                .iter()
                .find(|b| {
                    let hit = pick < b.3;
                    pick = pick.saturating_sub(b.3);
                    hit
                })
                .unwrap_or(&BOARDS[3]);
            let role = match rng.below(10) {
                0 | 1 => "camera",
                2 => "gateway",
                _ => "general",
            };
            let mut node = Node::new(&format!("node-{i:05}"), Resources::new(board.0, board.1), board.2)
                .with_label("zone", ZONES[rng.below(4) as usize])
                .with_label("role", role)
                .with_label("flotilla.io/hostname", &format!("node-{i:05}"))
                .with_ready(!rng.pct(1));
            if rng.pct(15) {
                node = node.with_arch("armv7");
            }
            if role == "camera" {
                node = node.with_taint(Taint::new("dedicated", "camera", TaintEffect::NoSchedule));
                node.allocatable = node.allocatable.clone().with_extended("flotilla.io/serial", 2);
            }
            if rng.pct(5) {
                node = node.with_taint(Taint::new("maintenance", "soon", TaintEffect::PreferNoSchedule));
            }
            node
        })
        .collect()
}

/// Pending replicas of many workloads, in workload order.
fn workloads(rng: &mut Rng, replicas: usize) -> Vec<Replica> {
    let mut out = Vec::with_capacity(replicas);
    let mut w = 0;
    while out.len() < replicas {
        let count = (5 + rng.below(60) as usize).min(replicas - out.len());
        let cpu = 25 * (1 + rng.below(12));
        let mem = 16 * MIB * (1 + rng.below(12));
        let mut template = Replica::new("", &format!("wl-{w:05}"), Resources::new(cpu, mem))
            .with_priority(if rng.pct(10) { 100 } else { 0 });
        if rng.pct(12) {
            template =
                template.with_selector("role", "camera").with_toleration(Toleration::equal("dedicated", "camera"));
            if rng.pct(50) {
                template.requests = template.requests.clone().with_extended("flotilla.io/serial", 1);
            }
        }
        if rng.pct(10) {
            template = template.with_arch("aarch64");
        }
        if rng.pct(10) {
            template = template.with_max_per_node(2);
        }
        if rng.pct(3) {
            template = template.with_topology_spread("zone", 1);
        }
        if rng.pct(5) {
            template = template.with_score_mode(ScoreMode::Spread);
        }
        if rng.pct(3) {
            template = template.with_selector("zone", ZONES[rng.below(4) as usize]);
        }
        for r in 0..count {
            let mut replica = template.clone();
            replica.id = format!("wl-{w:05}-{r}").into();
            out.push(replica);
        }
        w += 1;
    }
    out
}

/// Runs the benchmark.
pub fn run(args: SchedArgs) -> anyhow::Result<()> {
    let mut rng = Rng(args.seed);
    let view = ClusterView::new(fleet(&mut rng, args.nodes), Vec::new());
    let pending = workloads(&mut rng, args.replicas);
    let start = Instant::now();
    let plan = schedule(&view, &pending, args.seed);
    let seconds = start.elapsed().as_secs_f64();
    if let Some(u) = plan.unplaced.first() {
        eprintln!("note: {} replicas unplaced, e.g. {}: {}", plan.unplaced.len(), u.replica, u.reason);
    }
    let placed = plan.placements.len();
    println!(
        "{}",
        json!({
            "nodes": args.nodes,
            "replicas": args.replicas,
            "placed": placed,
            "seconds": (seconds * 1e4).round() / 1e4,
            "placements_per_s": (placed as f64 / seconds).round(),
        })
    );
    Ok(())
}
