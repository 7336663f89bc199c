//! `flotilla-bench pack`: the scheduler on bin-packing instances (issue #5).
//!
//! Each instance becomes one node per item (an upper bound on what any
//! packing needs), all with the instance's capacity, and one batch of
//! pending replicas whose requests are the item sizes. One-dimensional
//! sizes are memory requests; two-dimensional ones are cpu and memory.
//! The product's own `schedule` does the packing; first-fit decreasing and
//! the Martello-Toth L2 lower bound are computed here as references.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use flotilla_scheduler::{ClusterView, Node, Options, Replica, Resources, schedule_with};
use serde_json::json;

/// Options of `flotilla-bench pack`.
#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// Instance files, or directories whose files are all instances.
    pub files: Vec<PathBuf>,
    /// Optimal bin counts: TSV with the instance (`set/file`) in the first
    /// column and the optimum in the second (BPPLIB `optima.tsv`).
    #[arg(long)]
    pub optima: Option<PathBuf>,
    /// Seed passed to the scheduler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Override the improvement step's work per pending replica.
    #[arg(long)]
    pub budget_per_replica: Option<u64>,
    /// Override the improvement step's kicks per attempt.
    #[arg(long)]
    pub kicks: Option<u32>,
    /// Override the nodes tried per improvement round.
    #[arg(long)]
    pub targets: Option<usize>,
    /// Best-fit decreasing only, no improvement step (for comparison).
    #[arg(long)]
    pub no_improve: bool,
}

impl PackArgs {
    /// Scheduler options with the overrides applied.
    fn options(&self) -> Options {
        let mut o = Options::default();
        if let Some(b) = self.budget_per_replica {
            o.improve_budget_per_replica = b;
            o.improve_budget_max = u64::MAX;
        }
        if let Some(k) = self.kicks {
            o.improve_kicks = k;
        }
        if let Some(t) = self.targets {
            o.improve_targets = t;
        }
        o.improve &= !self.no_improve;
        o
    }
}

/// A parsed instance: capacities and item sizes, one or two dimensions.
struct Instance {
    capacity: Vec<u64>,
    items: Vec<Vec<u64>>,
    /// Negative sizes raised to 0 (see `parse`).
    clamped: usize,
}

/// Parses BPPLIB text: `n`, the capacities (one per dimension), then one
/// item per line with one size per dimension.
fn parse(text: &str) -> anyhow::Result<Instance> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let nums = |l: &str| -> anyhow::Result<Vec<i64>> {
        l.split_whitespace().map(|t| t.parse::<i64>().with_context(|| format!("bad number {t:?}"))).collect()
    };
    let n: usize = lines.next().context("empty file")?.parse().context("bad item count")?;
    let capacity: Vec<u64> = nums(lines.next().context("no capacity line")?)?
        .into_iter()
        .map(|c| u64::try_from(c).context("negative capacity"))
        .collect::<anyhow::Result<_>>()?;
    ensure!((1..=2).contains(&capacity.len()), "expected 1 or 2 capacities, got {}", capacity.len());
    let raw: Vec<Vec<i64>> = lines.map(nums).collect::<anyhow::Result<_>>()?;
    // The vector triplet generator sets the third item of a triplet to
    // `capacity - a - b`, which is sometimes -1 or -2 in one dimension. A
    // request cannot be negative: raise it to 0 and count it (the instance
    // gets slightly harder, so the published optimum stays a lower bound).
    let clamped = raw.iter().flatten().filter(|&&s| s < 0).count();
    let items: Vec<Vec<u64>> = raw.into_iter().map(|it| it.into_iter().map(|s| s.max(0) as u64).collect()).collect();
    ensure!(items.len() == n, "header says {n} items, file has {}", items.len());
    for (i, it) in items.iter().enumerate() {
        ensure!(it.len() == capacity.len(), "item {i} has {} sizes, capacity has {}", it.len(), capacity.len());
        ensure!(it.iter().zip(&capacity).all(|(s, c)| s <= c), "item {i} exceeds the capacity");
    }
    Ok(Instance { capacity, items, clamped })
}

/// Martello & Toth's L2 lower bound for one dimension.
fn l2_bound(sizes: &[u64], cap: u64) -> u64 {
    let total: u64 = sizes.iter().sum();
    let mut best = total.div_ceil(cap.max(1));
    let mut alphas: Vec<u64> = sizes.iter().copied().filter(|&w| 2 * w <= cap).collect();
    alphas.push(0);
    alphas.sort_unstable();
    alphas.dedup();
    for alpha in alphas {
        // J1: too big to share a bin with any item >= alpha; J2: more than
        // half; J3: in [alpha, cap/2]. J3 must fit in J2's slack or open bins.
        let (mut j1, mut j2, mut sum2, mut sum3) = (0u64, 0u64, 0u64, 0u64);
        for &w in sizes {
            if w > cap - alpha {
                j1 += 1;
            } else if 2 * w > cap {
                j2 += 1;
                sum2 += w;
            } else if w >= alpha {
                sum3 += w;
            }
        }
        let room = j2 * cap - sum2;
        let extra = sum3.saturating_sub(room).div_ceil(cap.max(1));
        best = best.max(j1 + j2 + extra);
    }
    best
}

/// First-fit decreasing (by the sum of normalised sizes), the reference.
fn ffd(inst: &Instance) -> usize {
    let norm =
        |it: &Vec<u64>| -> f64 { it.iter().zip(&inst.capacity).map(|(&s, &c)| s as f64 / c.max(1) as f64).sum() };
    let mut order: Vec<&Vec<u64>> = inst.items.iter().collect();
    order.sort_by(|a, b| norm(b).total_cmp(&norm(a)));
    let mut bins: Vec<Vec<u64>> = Vec::new();
    for it in order {
        let fits = |b: &Vec<u64>| b.iter().zip(it).zip(&inst.capacity).all(|((l, s), c)| l + s <= *c);
        match bins.iter_mut().find(|b| fits(b)) {
            Some(b) => b.iter_mut().zip(it).for_each(|(l, s)| *l += s),
            None => bins.push(it.clone()),
        }
    }
    bins.len()
}

/// The instance as a fleet and a batch; returns the nodes used.
fn run_scheduler(inst: &Instance, seed: u64, opts: &Options) -> anyhow::Result<usize> {
    let n = inst.items.len();
    let res = |v: &[u64]| match *v {
        [m] => Resources::new(0, m),
        [c, m] => Resources::new(c, m),
        _ => unreachable!("parse checks the dimension"),
    };
    let nodes: Vec<Node> = (0..n).map(|i| Node::new(&format!("node-{i:04}"), res(&inst.capacity), n as u32)).collect();
    let pending: Vec<Replica> = inst
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| Replica::new(&format!("item-{i:04}"), &format!("w{i}"), res(it)))
        .collect();
    let view = ClusterView::new(nodes, Vec::new());
    let plan = schedule_with(&view, &pending, seed, opts);
    if !plan.unplaced.is_empty() {
        bail!("{} items unplaced: {}", plan.unplaced.len(), plan.unplaced[0].reason);
    }
    // Check the plan rather than trust it: no node over capacity.
    let mut load: HashMap<&str, Vec<u64>> = HashMap::new();
    let size: HashMap<&str, &Vec<u64>> = pending.iter().zip(&inst.items).map(|(r, it)| (r.id.as_str(), it)).collect();
    for p in &plan.placements {
        let l = load.entry(p.node.as_str()).or_insert_with(|| vec![0; inst.capacity.len()]);
        l.iter_mut().zip(size[p.replica.as_str()]).for_each(|(l, s)| *l += s);
    }
    ensure!(
        load.values().all(|l| l.iter().zip(&inst.capacity).all(|(l, c)| l <= c)),
        "scheduler over-committed a node"
    );
    ensure!(plan.placements.len() == n, "not every item was placed");
    Ok(load.len())
}

/// Reads an optima TSV: instance name -> optimum.
fn read_optima(path: &Path) -> anyhow::Result<HashMap<String, u64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut map = HashMap::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut cols = line.split('\t');
        let (Some(name), Some(opt)) = (cols.next(), cols.next()) else {
            bail!("bad optima line {line:?}");
        };
        let opt: u64 = opt.trim().parse().with_context(|| format!("bad optimum in {line:?}"))?;
        map.insert(name.trim().to_owned(), opt);
    }
    Ok(map)
}

/// `set/file` for a path, the key optima files use.
fn instance_name(path: &Path) -> String {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    match path.parent().and_then(Path::file_name) {
        Some(dir) => format!("{}/{file}", dir.to_string_lossy()),
        None => file,
    }
}

/// Expands directories into their (sorted) instance files.
fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            // Metadata next to the instances is not an instance.
            files.retain(|f| f.is_file() && !matches!(f.extension().and_then(|e| e.to_str()), Some("tsv" | "md")));
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Runs the benchmark.
pub fn run(args: PackArgs) -> anyhow::Result<()> {
    let optima = match &args.optima {
        Some(p) => read_optima(p)?,
        None => HashMap::new(),
    };
    let opts = args.options();
    let files = expand(&args.files)?;
    ensure!(!files.is_empty(), "no instance files given");
    let (mut optimal, mut plus_one, mut worse, mut worse_than_ffd) = (0, 0, 0, 0);
    let mut ms_max: f64 = 0.0;
    for path in &files {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let inst = parse(&text).with_context(|| format!("parsing {}", path.display()))?;
        let name = instance_name(path);
        let start = Instant::now();
        let used = run_scheduler(&inst, args.seed, &opts).with_context(|| format!("packing {name}"))?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        ms_max = ms_max.max(ms);
        let lower = (0..inst.capacity.len())
            .map(|d| {
                let sizes: Vec<u64> = inst.items.iter().map(|it| it[d]).collect();
                l2_bound(&sizes, inst.capacity[d])
            })
            .max()
            .unwrap_or(0);
        let ffd_used = ffd(&inst);
        worse_than_ffd += usize::from(used > ffd_used);
        let mut line = json!({
            "instance": name,
            "items": inst.items.len(),
            "nodes_used": used,
            "lower_bound": lower,
            "ffd_nodes": ffd_used,
            "ms": (ms * 1000.0).round() / 1000.0,
        });
        if inst.clamped > 0 {
            line["clamped_sizes"] = json!(inst.clamped);
        }
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
        let opt = optima.get(&name).or_else(|| file.and_then(|f| optima.get(&f))).copied();
        if let Some(opt) = opt {
            line["optimum"] = json!(opt);
            match (used as u64).cmp(&opt) {
                std::cmp::Ordering::Less => bail!("{name}: {used} nodes, below the proven optimum {opt}"),
                std::cmp::Ordering::Equal => optimal += 1,
                _ if used as u64 == opt + 1 => plus_one += 1,
                _ => worse += 1,
            }
        }
        println!("{line}");
    }
    println!(
        "{}",
        json!({
            "summary": true,
            "instances": files.len(),
            "optimal": optimal,
            "plus_one": plus_one,
            "worse": worse,
            "worse_than_ffd": worse_than_ffd,
            "ms_max": (ms_max * 1000.0).round() / 1000.0,
        })
    );
    Ok(())
}
