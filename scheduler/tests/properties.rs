//! Property tests: invariants that hold for any fleet and batch (after
//! Nomad's reconcile_cluster_prop_test.go).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::overcommit;
use flotilla_scheduler::{
    BoundReplica, ClusterView, Node, Replica, Resources, ScoreMode, Taint, TaintEffect, Toleration, schedule,
};
use proptest::prelude::*;

fn arb_node(i: usize) -> impl Strategy<Value = Node> {
    (
        0u64..4000,
        0u64..4096,
        0u32..6,
        any::<bool>(),
        prop::sample::select(vec!["aarch64", "armv7"]),
        prop::sample::select(vec!["a", "b", "c"]),
        0u8..4,
        0u64..3,
    )
        .prop_map(move |(cpu, mem, slots, ready, arch, zone, taint, serial)| {
            let mut alloc = Resources::new(cpu, mem);
            if serial > 0 {
                alloc = alloc.with_extended("flotilla.io/serial", serial);
            }
            let mut n = Node::new(&format!("n{i}"), alloc, slots)
                .with_ready(ready || i.is_multiple_of(2))
                .with_arch(arch)
                .with_label("zone", zone);
            n = match taint {
                1 => n.with_taint(Taint::new("dedicated", "cam", TaintEffect::NoSchedule)),
                2 => n.with_taint(Taint::new("maint", "x", TaintEffect::PreferNoSchedule)),
                _ => n,
            };
            n
        })
}

fn arb_replica(i: usize) -> impl Strategy<Value = Replica> {
    (0u64..1500, 0u64..1500, 0usize..4, -1i32..2, 0u8..8, 0u64..2).prop_map(
        move |(cpu, mem, wl, prio, flags, serial)| {
            let mut req = Resources::new(cpu, mem);
            if serial > 0 && flags & 1 == 1 {
                req = req.with_extended("flotilla.io/serial", serial);
            }
            let mut r = Replica::new(&format!("r{i}"), &format!("w{wl}"), req).with_priority(prio);
            // Constraints are per workload, as the model expects.
            match wl {
                1 => r = r.with_max_per_node(1),
                2 => r = r.with_topology_spread("zone", 1),
                3 => r = r.with_score_mode(ScoreMode::Spread).with_arch("aarch64"),
                _ => {}
            }
            if flags & 2 == 2 {
                r = r.with_toleration(Toleration::exists("dedicated"));
            }
            if flags & 4 == 4 {
                r = r.with_selector("zone", "a");
            }
            r
        },
    )
}

fn arb_input() -> impl Strategy<Value = (ClusterView, Vec<Replica>)> {
    (1usize..8, 0usize..6, 0usize..24).prop_flat_map(|(n_nodes, n_bound, n_pending)| {
        let nodes: Vec<_> = (0..n_nodes).map(arb_node).collect();
        let bound: Vec<_> = (0..n_bound).map(|i| (arb_replica(100 + i), 0..n_nodes + 1)).collect();
        let pending: Vec<_> = (0..n_pending).map(arb_replica).collect();
        (nodes, bound, pending).prop_map(|(nodes, bound, pending)| {
            let bound = bound
                .into_iter()
                .map(|(r, n)| BoundReplica {
                    replica: r,
                    // Index n_nodes names a node that is not in the view.
                    node: format!("n{n}").into(),
                })
                .collect();
            (ClusterView::new(nodes, bound), pending)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_node_is_ever_overcommitted((view, pending) in arb_input(), seed in any::<u64>()) {
        let plan = schedule(&view, &pending, seed);
        prop_assert_eq!(overcommit(&view, &pending, &plan), None);
    }

    #[test]
    fn every_replica_is_placed_once_or_explained((view, pending) in arb_input(), seed in any::<u64>()) {
        let plan = schedule(&view, &pending, seed);
        let placed: Vec<&str> = plan.placements.iter().map(|p| p.replica.as_str()).collect();
        let unplaced: Vec<&str> = plan.unplaced.iter().map(|u| u.replica.as_str()).collect();
        let all: BTreeSet<&str> = placed.iter().chain(&unplaced).copied().collect();
        prop_assert_eq!(all.len(), placed.len() + unplaced.len(), "a replica appears twice");
        let expected: BTreeSet<&str> = pending.iter().map(|r| r.id.as_str()).collect();
        prop_assert_eq!(all, expected);
        let ready_nodes = view.nodes.len();
        for u in &plan.unplaced {
            // Every node in the view rejected it, for a stated cause.
            prop_assert_eq!(u.reason.nodes_total, ready_nodes);
            prop_assert_eq!(u.reason.nodes_rejecting(), ready_nodes);
            let prefix = format!("0/{} nodes available", ready_nodes);
            prop_assert!(u.reason.to_string().starts_with(&prefix));
        }
    }

    #[test]
    fn same_seed_gives_the_same_plan((view, pending) in arb_input(), seed in any::<u64>()) {
        prop_assert_eq!(schedule(&view, &pending, seed), schedule(&view, &pending, seed));
    }

    #[test]
    fn placements_respect_the_hard_constraints((view, pending) in arb_input(), seed in any::<u64>()) {
        let plan = schedule(&view, &pending, seed);
        let nodes: BTreeMap<&str, &Node> = view.nodes.iter().map(|n| (n.id.as_str(), &**n)).collect();
        let by_id: BTreeMap<&str, &Replica> = pending.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut per_node: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        for b in &view.bound {
            *per_node.entry((b.node.as_str(), b.replica.workload.as_str())).or_default() += 1;
        }
        for p in &plan.placements {
            let (n, r) = (nodes[p.node.as_str()], by_id[p.replica.as_str()]);
            prop_assert!(n.ready);
            prop_assert!(r.arch.as_ref().is_none_or(|a| *a == n.arch));
            for (k, v) in &r.node_selector {
                prop_assert_eq!(n.labels.get(k), Some(v));
            }
            for t in n.taints.iter().filter(|t| t.effect != TaintEffect::PreferNoSchedule) {
                prop_assert!(r.tolerations.iter().any(|tol| tol.tolerates(t)));
            }
            *per_node.entry((p.node.as_str(), r.workload.as_str())).or_default() += 1;
        }
        for ((node, wl), count) in per_node {
            // Workload w1 carries max_per_node = 1 (see arb_replica); bound
            // replicas may already exceed it, the plan must not add to them.
            if wl == "w1" && plan.placements.iter().any(|p| p.node.as_str() == node && by_id[p.replica.as_str()].workload.as_str() == "w1") {
                prop_assert_eq!(count, 1);
            }
        }
    }
}
