//! Property tests: every valid message survives a round trip, and no input
//! at all makes a decoder panic.

use firmware_proto::bounded::truncated;
use firmware_proto::*;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Strategies for valid messages

fn text<const N: usize>() -> impl Strategy<Value = heapless::String<N>> {
    // Any printable text, including multi-byte characters, cut to capacity.
    "\\PC{0,24}".prop_map(|s| truncated::<N>(&s))
}

fn name<const N: usize>() -> impl Strategy<Value = Name<N>> {
    "[a-z0-9][a-z0-9._-]{0,40}".prop_map(|s| Name::new(&s[..s.len().min(N)]).unwrap())
}

fn text_list<const BYTES: usize, const ITEMS: usize>() -> impl Strategy<Value = TextList<BYTES, ITEMS>> {
    prop::collection::vec("\\PC{0,40}", 0..12).prop_map(|items| {
        let mut list = TextList::new();
        for item in &items {
            if list.push(item).is_err() {
                break;
            }
        }
        list
    })
}

fn hvec<T: std::fmt::Debug, const N: usize>(
    item: impl Strategy<Value = T>,
) -> impl Strategy<Value = heapless::Vec<T, N>> {
    prop::collection::vec(item, 0..=N.min(6)).prop_map(|v| v.into_iter().collect())
}

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Bytes)
}

fn capacity() -> impl Strategy<Value = Capacity> {
    (any::<u32>(), any::<u64>(), any::<u16>()).prop_map(|(cpu_millis, memory_bytes, max_workloads)| Capacity {
        cpu_millis,
        memory_bytes,
        max_workloads,
    })
}

fn taint_effect() -> impl Strategy<Value = TaintEffect> {
    prop_oneof![Just(TaintEffect::NoSchedule), Just(TaintEffect::PreferNoSchedule), Just(TaintEffect::NoExecute)]
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        name(),
        prop_oneof![Just(Arch::Amd64), Just(Arch::Arm64), Just(Arch::Arm), Just(Arch::Riscv64)],
        prop_oneof![Just(Os::Linux), Just(Os::BareMetal)],
        capacity(),
        capacity(),
        hvec((text(), text()).prop_map(|(key, value)| Label { key, value })),
        hvec((text(), text(), taint_effect()).prop_map(|(key, value, effect)| Taint { key, value, effect })),
        hvec((text(), any::<u16>(), text_list()).prop_map(|(resource, count, paths)| DeviceClass {
            resource,
            count,
            paths,
        })),
        (text(), any::<u8>(), prop_oneof![Just(Profile::Compact), Just(Profile::Linux)]),
    )
        .prop_map(
            |(
                node_id,
                arch,
                os,
                capacity,
                allocatable,
                labels,
                taints,
                devices,
                (agent_version, max_protocol_version, profile),
            )| {
                Hello {
                    node_id,
                    arch,
                    os,
                    capacity,
                    allocatable,
                    labels,
                    taints,
                    devices,
                    agent_version,
                    max_protocol_version,
                    profile,
                }
            },
        )
}

fn exit() -> impl Strategy<Value = Exit> {
    (
        any::<i32>(),
        prop_oneof![
            Just(ExitReason::Exited),
            Just(ExitReason::OomKilled),
            Just(ExitReason::LivenessFailed),
            Just(ExitReason::Signaled),
            Just(ExitReason::Stopped),
        ],
    )
        .prop_map(|(code, reason)| Exit { code, reason })
}

fn phase() -> impl Strategy<Value = Phase> {
    prop_oneof![
        Just(Phase::Pending),
        Just(Phase::Pulling),
        Just(Phase::Creating),
        Just(Phase::Running),
        Just(Phase::Succeeded),
        Just(Phase::Failed),
        Just(Phase::CrashLoopBackOff),
        Just(Phase::Terminating),
        Just(Phase::Unknown),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    let entry = (
        phase(),
        any::<u32>(),
        prop::option::of(exit()),
        prop_oneof![
            Just(Readiness::NoProbe),
            Just(Readiness::Starting),
            Just(Readiness::Ready),
            Just(Readiness::NotReady)
        ],
        any::<u32>(),
        any::<u32>(),
        prop::option::of(name::<REPLICA_ID_MAX>()),
    );
    let container = (
        any::<u8>(),
        prop_oneof![Just(ContainerState::Waiting), Just(ContainerState::Running), Just(ContainerState::Terminated)],
        any::<bool>(),
        any::<u32>(),
        prop::option::of(exit()),
        any::<(u32, u32)>(),
    );
    (
        any::<u64>(),
        any::<(u32, u32, u32)>(),
        prop::collection::vec(entry, 0..=MAX_STATUS_REPLICAS),
        prop::collection::vec(container, 0..8),
    )
        .prop_map(|(generation, (cpu, mem, disk), entries, containers)| {
            let mut replicas = heapless::Vec::new();
            for (i, (phase, restarts, last_exit, readiness, cpu_millis, memory_kib, id)) in
                entries.into_iter().enumerate()
            {
                // Unique refs: slots by position, ids suffixed by position.
                let replica = match id {
                    Some(id) => ReplicaRef::Id(
                        Name::new(&format!("{}-{i}", &id.as_str()[..id.as_str().len().min(50)])).unwrap(),
                    ),
                    None => ReplicaRef::Slot(i as u8),
                };
                let entry = ReplicaStatus { replica, phase, restarts, last_exit, readiness, cpu_millis, memory_kib };
                replicas.push(entry).unwrap();
            }
            let mut entries = heapless::Vec::new();
            if !replicas.is_empty() {
                // Valid refs: a replica of this heartbeat, unique by position.
                for (i, (replica, state, ready, restarts, last_exit, (cpu_millis, memory_kib))) in
                    containers.into_iter().enumerate()
                {
                    let replica = replica % replicas.len() as u8;
                    let container = i as u8;
                    let entry = ContainerStatus {
                        replica,
                        container,
                        state,
                        ready,
                        restarts,
                        last_exit,
                        cpu_millis,
                        memory_kib,
                    };
                    entries.push(entry).unwrap();
                }
            }
            let usage = NodeUsage { cpu_millis: cpu, memory_kib: mem, disk_free_mib: disk };
            Status { generation, usage, replicas, containers: entries }
        })
}

fn probe_kind() -> impl Strategy<Value = ProbeKind> {
    prop_oneof![Just(ProbeKind::Startup), Just(ProbeKind::Readiness), Just(ProbeKind::Liveness)]
}

fn event() -> impl Strategy<Value = Event> {
    let kind = prop_oneof![
        Just(EventKind::Started),
        exit().prop_map(EventKind::Exited),
        any::<u64>().prop_map(|limit_bytes| EventKind::OomKilled { limit_bytes }),
        (probe_kind(), any::<u16>(), text()).prop_map(|(probe, failures, reason)| EventKind::ProbeFailed {
            probe,
            failures,
            reason
        }),
        (digest(), any::<u64>(), any::<u64>()).prop_map(|(image, done_bytes, total_bytes)| {
            EventKind::PullProgress { image, done_bytes, total_bytes }
        }),
        (digest(), text()).prop_map(|(image, reason)| EventKind::PullFailed { image, reason }),
        (any::<u64>(), text()).prop_map(|(generation, reason)| EventKind::Rejected { generation, reason }),
    ];
    (any::<u64>(), prop::option::of(name()), kind, prop::option::of(name()))
        .prop_map(|(at_unix_ms, replica, kind, container)| Event { at_unix_ms, replica, kind, container })
}

fn log_chunk() -> impl Strategy<Value = LogChunk> {
    let end = prop::option::of(
        (any::<u64>(), prop::option::of(text())).prop_map(|(next_offset, error)| LogEnd { next_offset, error }),
    );
    (any::<u64>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..=LOG_CHUNK_MAX), end).prop_map(
        |(request_id, index, data, end)| LogChunk {
            request_id,
            index,
            data: heapless::Vec::from_slice(&data).expect("within capacity"),
            end,
        },
    )
}

fn service_table() -> impl Strategy<Value = ServiceTable> {
    let endpoint = (any::<[u8; 4]>(), any::<u16>()).prop_map(|(address, port)| Endpoint { address, port });
    let port = (name(), text(), any::<u16>(), prop::collection::vec(endpoint, 0..=MAX_ENDPOINTS)).prop_map(
        |(service, port_name, port, endpoints)| ServicePort {
            service,
            port_name,
            port,
            protocol: Protocol::Tcp,
            endpoints: heapless::Vec::from_slice(&endpoints).expect("within capacity"),
            node_port: (port % 3 == 0).then_some(port),
        },
    );
    (name(), any::<u64>(), prop::collection::vec(port, 0..4)).prop_map(|(node_id, generation, services)| ServiceTable {
        node_id,
        generation,
        services: heapless::Vec::from_slice(&services).expect("within capacity"),
    })
}

fn log_request() -> impl Strategy<Value = LogRequest> {
    (name(), any::<u64>(), name(), prop::option::of(any::<u64>()), any::<u32>(), any::<u32>(), prop::option::of(name()))
        .prop_map(|(node_id, request_id, replica, offset, tail_lines, max_bytes, container)| LogRequest {
            node_id,
            request_id,
            replica,
            offset,
            tail_lines,
            max_bytes,
            container,
        })
}

fn probe() -> impl Strategy<Value = Probe> {
    let action = prop_oneof![
        text_list().prop_map(|command| ProbeAction::Exec { command }),
        (text(), any::<u16>(), any::<bool>()).prop_map(|(path, port, https)| ProbeAction::HttpGet {
            path,
            port,
            https
        }),
        any::<u16>().prop_map(|port| ProbeAction::Tcp { port }),
        (any::<u16>(), text()).prop_map(|(port, service)| ProbeAction::Grpc { port, service }),
    ];
    (action, any::<(u16, u16, u16, u8, u8)>()).prop_map(
        |(action, (initial_delay_s, period_s, timeout_s, success_threshold, failure_threshold))| Probe {
            action,
            initial_delay_s,
            period_s,
            timeout_s,
            success_threshold,
            failure_threshold,
        },
    )
}

fn volume(config_len: usize) -> impl Strategy<Value = VolumeMount> {
    let source = prop_oneof![
        (any::<bool>(), prop::option::of(any::<u64>()))
            .prop_map(|(in_memory, size_limit_bytes)| VolumeSource::EmptyDir { in_memory, size_limit_bytes }),
        text().prop_map(|path| VolumeSource::HostPath { path }),
        (0..config_len.max(1)).prop_map(move |i| if config_len == 0 {
            VolumeSource::EmptyDir { in_memory: false, size_limit_bytes: None }
        } else {
            VolumeSource::Config { index: i as u8 }
        }),
    ];
    (text(), text(), any::<bool>(), source).prop_map(|(name, mount_path, read_only, source)| VolumeMount {
        name,
        mount_path,
        read_only,
        source,
    })
}

fn replica(config_len: usize) -> impl Strategy<Value = ReplicaSpec> {
    let first = (
        name(),
        (text(), digest()).prop_map(|(reference, digest)| ImageRef { reference, digest }),
        text_list(),
        text_list(),
        text_list(),
        text(),
        prop::option::of(any::<(u32, u32)>().prop_map(|(uid, gid)| User { uid, gid })),
        (any::<u32>(), any::<u64>(), any::<Option<u32>>(), any::<Option<u64>>(), any::<Option<u32>>()).prop_map(
            |(cpu_request_millis, memory_request_bytes, cpu_limit_millis, memory_limit_bytes, pids_limit)| Resources {
                cpu_request_millis,
                memory_request_bytes,
                cpu_limit_millis,
                memory_limit_bytes,
                pids_limit,
            },
        ),
    );
    let second = (
        hvec((text(), any::<u16>()).prop_map(|(resource, count)| ExtendedRequest { resource, count })),
        hvec((text(), text(), any::<u8>()).prop_map(|(host_path, container_path, access)| DeviceMapping {
            host_path,
            container_path,
            access,
        })),
        hvec(
            (text(), any::<u16>(), any::<Option<u16>>(), prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)])
                .prop_map(|(name, container_port, host_port, protocol)| Port {
                    name,
                    container_port,
                    host_port,
                    protocol,
                }),
        ),
        hvec(volume(config_len)),
        prop::option::of(probe()),
        prop::option::of(probe()),
        prop::option::of(probe()),
        prop_oneof![Just(RestartPolicy::Always), Just(RestartPolicy::OnFailure), Just(RestartPolicy::Never)],
        any::<bool>(),
        prop_oneof![Just(Seccomp::RuntimeDefault), Just(Seccomp::Unconfined)],
        any::<u16>(),
    );
    (first, second).prop_map(
        |(
            (id, image, command, args, env, working_dir, user, resources),
            (
                extended,
                devices,
                ports,
                volumes,
                startup_probe,
                readiness_probe,
                liveness_probe,
                restart_policy,
                read_only_rootfs,
                seccomp,
                termination_grace_s,
            ),
        )| ReplicaSpec {
            id,
            image,
            command,
            args,
            env,
            working_dir,
            user,
            resources,
            extended,
            devices,
            ports,
            volumes,
            startup_probe,
            readiness_probe,
            liveness_probe,
            restart_policy,
            read_only_rootfs,
            seccomp,
            termination_grace_s,
        },
    )
}

fn config_object() -> impl Strategy<Value = ConfigObject> {
    (
        text(),
        any::<bool>(),
        prop::collection::vec(("[a-z][a-z0-9.]{0,12}", prop::collection::vec(any::<u8>(), 0..200)), 0..6),
    )
        .prop_map(|(name, secret, files)| {
            let mut file_names = TextList::<CONFIG_NAMES_BYTES, CONFIG_FILES>::new();
            let mut contents = ByteList::<CONFIG_DATA_BYTES, CONFIG_FILES>::new();
            for (file, data) in files {
                if file_names.push(&file).is_err() || contents.push(&data).is_err() {
                    break;
                }
            }
            // Keep both lists the same length, as the rules require.
            let n = file_names.len().min(contents.len());
            let file_names = TextList::from_strs(file_names.iter().take(n)).unwrap();
            let mut trimmed = ByteList::new();
            for data in contents.iter().take(n) {
                trimmed.push(data).unwrap();
            }
            ConfigObject { name, secret, file_names, contents: trimmed }
        })
}

fn desired() -> impl Strategy<Value = DesiredDocument> {
    (name(), any::<u64>(), 0..=MAX_CONFIG_OBJECTS.min(3))
        .prop_flat_map(|(node_id, generation, config_len)| {
            (
                Just(node_id),
                Just(generation),
                prop::collection::vec(replica(config_len), 0..4),
                prop::collection::vec(config_object(), config_len),
            )
        })
        .prop_map(|(node_id, generation, mut replicas, config)| {
            // Replica ids must be unique within a document.
            for (i, r) in replicas.iter_mut().enumerate() {
                r.id = Name::new(&format!("r{i}-{}", &r.id.as_str()[..r.id.as_str().len().min(40)])).unwrap();
            }
            DesiredDocument { node_id, generation, replicas, config }
        })
}

// Linux profile

fn heap_text<const N: usize>() -> impl Strategy<Value = heap::Text<N>> {
    "\\PC{0,24}".prop_map(|s| heap::Text::new(truncated::<N>(&s).as_str()).unwrap())
}

fn texts<const BYTES: usize, const ITEMS: usize>() -> impl Strategy<Value = heap::Texts<BYTES, ITEMS>> {
    prop::collection::vec("\\PC{0,40}", 0..12).prop_map(|items| {
        let mut list = heap::Texts::new();
        for item in &items {
            if list.push(item).is_err() {
                break;
            }
        }
        list
    })
}

fn list<T: std::fmt::Debug, const N: usize>(item: impl Strategy<Value = T>) -> impl Strategy<Value = heap::List<T, N>> {
    prop::collection::vec(item, 0..=N.min(4)).prop_map(|v| heap::List::try_from(v).unwrap())
}

fn container(volumes: usize, sidecar: bool) -> impl Strategy<Value = pod::Container> {
    let mount = (0..volumes.max(1) as u16, heap_text(), any::<bool>(), "([a-z]{1,8}(/[a-z]{1,8}){0,2})?").prop_map(
        |(volume, mount_path, read_only, sub_path)| pod::Mount {
            volume,
            mount_path,
            read_only,
            sub_path: heap::Text::new(&sub_path).unwrap(),
        },
    );
    let first = (
        name(),
        (text(), digest()).prop_map(|(reference, digest)| ImageRef { reference, digest }),
        texts(),
        texts(),
        texts(),
        heap_text(),
        prop::option::of(any::<(u32, u32)>().prop_map(|(uid, gid)| User { uid, gid })),
        any::<(u32, u64, Option<u32>)>().prop_map(|(cpu_request_millis, memory_request_bytes, cpu_limit_millis)| {
            Resources { cpu_request_millis, memory_request_bytes, cpu_limit_millis, ..Resources::default() }
        }),
    );
    let second = (
        list((any::<u16>(), text(), any::<u16>()).prop_map(|(container_port, name, host)| Port {
            name,
            container_port,
            host_port: (host % 2 == 0).then_some(host),
            protocol: Protocol::Tcp,
        })),
        if volumes == 0 { Just(heap::List::new()).boxed() } else { list(mount).boxed() },
        prop::option::of(probe()),
        prop::option::of(probe()),
        any::<bool>(),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..3).prop_map(|items| {
            let mut sealed = heap::Blobs::new();
            for item in items {
                sealed.push(&item).unwrap();
            }
            sealed
        }),
    );
    (first, second).prop_map(
        move |(
            (name, image, command, args, env, working_dir, user, resources),
            (ports, mounts, readiness_probe, liveness_probe, read_only_rootfs, sealed_env),
        )| pod::Container {
            name,
            image,
            command,
            args,
            env,
            sealed_env,
            working_dir,
            user,
            resources,
            extended: heap::List::new(),
            devices: heap::List::new(),
            ports,
            mounts,
            startup_probe: None,
            readiness_probe,
            liveness_probe,
            read_only_rootfs,
            seccomp: Seccomp::RuntimeDefault,
            sidecar,
        },
    )
}

fn pod_spec(config_len: usize, claims_len: usize) -> impl Strategy<Value = pod::PodSpec> {
    let source = prop_oneof![
        (any::<bool>(), prop::option::of(any::<u64>()))
            .prop_map(|(in_memory, size_limit_bytes)| pod::PodVolumeSource::EmptyDir { in_memory, size_limit_bytes }),
        heap_text().prop_map(|path| pod::PodVolumeSource::HostPath { path }),
        (0..config_len.max(1)).prop_map(move |i| if config_len == 0 {
            pod::PodVolumeSource::EmptyDir { in_memory: true, size_limit_bytes: None }
        } else {
            pod::PodVolumeSource::Config { index: i as u16 }
        }),
        (0..claims_len.max(1)).prop_map(move |i| if claims_len == 0 {
            pod::PodVolumeSource::EmptyDir { in_memory: false, size_limit_bytes: None }
        } else {
            pod::PodVolumeSource::Claim { index: i as u16 }
        }),
    ];
    (0usize..4).prop_flat_map(move |volumes| {
        (
            name(),
            prop::collection::vec(source.clone(), volumes),
            prop::collection::vec((container(volumes, false), any::<bool>()), 0..3),
            prop::collection::vec(container(volumes, false), 1..3),
            any::<u16>(),
        )
            .prop_map(|(id, sources, init, app, termination_grace_s)| {
                // Names unique within the pod: suffixed by position.
                let unique = |i: usize, n: &Name<CONTAINER_NAME_MAX>| {
                    Name::new(&format!("c{i}-{}", &n.as_str()[..n.as_str().len().min(40)])).unwrap()
                };
                let mut init_containers = heap::List::new();
                for (i, (mut c, sidecar)) in init.into_iter().enumerate() {
                    c.name = unique(i, &c.name);
                    c.sidecar = sidecar;
                    init_containers.push(c).unwrap();
                }
                let mut containers = heap::List::new();
                for (i, mut c) in app.into_iter().enumerate() {
                    c.name = unique(10 + i, &c.name);
                    containers.push(c).unwrap();
                }
                let mut volumes = heap::List::new();
                for (i, source) in sources.into_iter().enumerate() {
                    volumes.push(pod::PodVolume { name: Name::new(&format!("v{i}")).unwrap(), source }).unwrap();
                }
                pod::PodSpec {
                    id,
                    init_containers,
                    containers,
                    volumes,
                    restart_policy: RestartPolicy::OnFailure,
                    termination_grace_s,
                }
            })
    })
}

fn config_ref() -> impl Strategy<Value = pod::ConfigRef> {
    (heap_text(), any::<bool>(), digest(), any::<u32>(), prop::option::of(any::<[u8; 32]>())).prop_map(
        |(name, secret, digest, size, key)| pod::ConfigRef {
            name,
            secret,
            digest,
            size,
            // 60 bytes: a 32-byte draw, then its first 28 again.
            sealed_key: key.map(|k| {
                let mut sealed = [0u8; pod::SEALED_KEY_LEN];
                sealed[..32].copy_from_slice(&k);
                sealed[32..].copy_from_slice(&k[..28]);
                firmware_proto::Bytes(sealed)
            }),
        },
    )
}

fn pod_document() -> impl Strategy<Value = pod::PodDocument> {
    (name(), any::<u64>(), 0usize..3, 0usize..3)
        .prop_flat_map(|(node_id, generation, config_len, claims_len)| {
            (
                Just(node_id),
                Just(generation),
                prop::collection::vec(pod_spec(config_len, claims_len), 0..4),
                prop::collection::vec(config_ref(), config_len),
                prop::collection::vec(any::<u64>(), claims_len),
            )
        })
        .prop_map(|(node_id, generation, mut pods, config, sizes)| {
            for (i, p) in pods.iter_mut().enumerate() {
                p.id = Name::new(&format!("p{i}-{}", &p.id.as_str()[..p.id.as_str().len().min(40)])).unwrap();
            }
            pod::PodDocument {
                node_id,
                generation,
                pods: heap::List::try_from(pods).unwrap(),
                config: heap::List::try_from(config).unwrap(),
                claims: heap::List::try_from(
                    sizes
                        .into_iter()
                        .enumerate()
                        .map(|(i, size_bytes)| pod::Claim {
                            id: heap::Text::new(&format!("default.data-{i}.0a1b2c3d")).unwrap(),
                            size_bytes,
                        })
                        .collect::<Vec<_>>(),
                )
                .unwrap(),
            }
        })
}

fn config_blob() -> impl Strategy<Value = pod::ConfigBlob> {
    (
        heap_text(),
        any::<bool>(),
        prop::collection::vec(("[a-z][a-z0-9.]{0,12}", prop::collection::vec(any::<u8>(), 0..2000)), 0..6),
    )
        .prop_map(|(name, secret, files)| {
            let mut file_names = heap::Texts::new();
            let mut contents = heap::Blobs::new();
            for (file, data) in files {
                file_names.push(&file).unwrap();
                contents.push(&data).unwrap();
            }
            pod::ConfigBlob { name, secret, file_names, contents }
        })
}

fn node_message() -> impl Strategy<Value = NodeMessage> {
    prop_oneof![
        hello().prop_map(NodeMessage::Hello),
        prop_oneof![Just(Presence::Online), Just(Presence::Offline), Just(Presence::ShuttingDown)]
            .prop_map(NodeMessage::Online),
        status().prop_map(NodeMessage::Status),
        event().prop_map(NodeMessage::Event),
        log_chunk().prop_map(NodeMessage::Logs),
        any::<u32>().prop_map(|generation| NodeMessage::CredentialRequest(CredentialRequest { generation })),
    ]
}

fn encode_node(message: &NodeMessage, seq: u64, mac: MacTag) -> Vec<u8> {
    encode_node_frame_to_vec(message, seq, |_| mac).unwrap()
}

// ---------------------------------------------------------------------------
// Round trips

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn node_messages_round_trip(message in node_message(), seq in any::<u64>(), mac in any::<[u8; 16]>()) {
        let bytes = encode_node(&message, seq, Bytes(mac));
        prop_assert!(bytes.len() <= MAX_FRAME_LEN);
        let decoded = decode_node_frame(&bytes).unwrap();
        prop_assert_eq!(decoded.authenticated, &bytes[..bytes.len() - MAC_LEN]);
        prop_assert_eq!(decoded.frame, NodeFrame { message, seq, mac: Bytes(mac) });
    }

    #[test]
    fn desired_documents_round_trip(document in desired(), signature in any::<[u8; 32]>()) {
        let signature = Bytes([signature, signature].concat().try_into().unwrap());
        let bytes = encode_signed_to_vec(&document.as_state(), |_| signature).unwrap();
        let decoded = decode_desired_frame(&bytes).unwrap();
        prop_assert_eq!(decoded.authenticated, &bytes[..bytes.len() - SIGNATURE_LEN]);
        prop_assert_eq!(decoded.frame.signature, signature);
        prop_assert_eq!(decoded.frame.replica_count(), document.replicas.len());
        prop_assert_eq!(DesiredDocument::from(&decoded.frame), document);
    }

    #[test]
    fn pod_documents_round_trip(document in pod_document(), signature in any::<[u8; 32]>()) {
        let signature = Bytes([signature, signature].concat().try_into().unwrap());
        let bytes = encode_signed_to_vec(&document, |_| signature).unwrap();
        let decoded = decode_signed::<pod::PodDocument>(&bytes).unwrap();
        prop_assert_eq!(decoded.authenticated, &bytes[..bytes.len() - SIGNATURE_LEN]);
        prop_assert_eq!(decoded.frame, (document, signature));
    }

    #[test]
    fn config_blobs_round_trip(blob in config_blob()) {
        let bytes = encode_signed_to_vec(&blob, |_| Signature::default()).unwrap();
        prop_assert_eq!(pod::signed_body(&bytes).unwrap(), &bytes[2..bytes.len() - SIGNATURE_LEN]);
        prop_assert_eq!(decode_signed::<pod::ConfigBlob>(&bytes).unwrap().frame.0, blob);
    }

    #[test]
    fn log_requests_round_trip(request in log_request(), signature in any::<[u8; 32]>()) {
        let signature = Bytes([signature, signature].concat().try_into().unwrap());
        let bytes = encode_signed_to_vec(&request, |_| signature).unwrap();
        let decoded = decode_signed::<LogRequest>(&bytes).unwrap();
        prop_assert_eq!(decoded.authenticated, &bytes[..bytes.len() - SIGNATURE_LEN]);
        prop_assert_eq!(decoded.frame, (request, signature));
    }

    #[test]
    fn service_tables_round_trip(table in service_table(), signature in any::<[u8; 32]>()) {
        let signature = Bytes([signature, signature].concat().try_into().unwrap());
        let bytes = encode_signed_to_vec(&table, |_| signature).unwrap();
        prop_assert!(bytes.len() <= MAX_FRAME_LEN);
        prop_assert_eq!(decode_signed::<ServiceTable>(&bytes).unwrap().frame, (table, signature));
    }

    /// The authenticator covers exactly what was handed to the MAC closure
    /// when encoding, so a receiver recomputes the same tag.
    #[test]
    fn mac_covers_the_bytes_the_sender_authenticated(message in node_message()) {
        let mut covered = Vec::new();
        let bytes = encode_node_frame_to_vec(&message, 5, |b| { covered = b.to_vec(); MacTag::default() }).unwrap();
        prop_assert_eq!(decode_node_frame(&bytes).unwrap().authenticated, &covered[..]);
    }
}

// ---------------------------------------------------------------------------
// Hostile input

/// Feeds bytes to every decoder; the only requirement is that each returns.
fn decode_everything(bytes: &[u8]) {
    let _ = peek_kind(bytes);
    if let Ok(node) = decode_node_frame(bytes) {
        // postcard accepts overlong varints, so the bytes may differ from a
        // fresh encoding (harmless: MACs cover the bytes received), but the
        // message must survive re-encoding unchanged.
        let again = encode_node_frame_to_vec(&node.frame.message, node.frame.seq, |_| node.frame.mac).unwrap();
        assert_eq!(decode_node_frame(&again).unwrap().frame, node.frame);
    }
    if let Ok(desired) = decode_desired_frame(bytes) {
        let _ = desired.frame.replicas().count();
        let _ = desired.frame.config().count();
    }
    if let Ok(table) = decode_signed::<ServiceTable>(bytes) {
        let again = encode_signed_to_vec(&table.frame.0, |_| table.frame.1).unwrap();
        assert_eq!(decode_signed::<ServiceTable>(&again).unwrap().frame, table.frame);
    }
    if let Ok(request) = decode_signed::<LogRequest>(bytes) {
        let again = encode_signed_to_vec(&request.frame.0, |_| request.frame.1).unwrap();
        assert_eq!(decode_signed::<LogRequest>(&again).unwrap().frame, request.frame);
    }
    if let Ok(document) = decode_signed::<pod::PodDocument>(bytes) {
        let again = encode_signed_to_vec(&document.frame.0, |_| document.frame.1).unwrap();
        assert_eq!(decode_signed::<pod::PodDocument>(&again).unwrap().frame, document.frame);
    }
    if let Ok(blob) = decode_signed::<pod::ConfigBlob>(bytes) {
        let again = encode_signed_to_vec(&blob.frame.0, |_| blob.frame.1).unwrap();
        assert_eq!(decode_signed::<pod::ConfigBlob>(&again).unwrap().frame, blob.frame);
    }
}

/// Random bytes, most with a valid header so the body parsers get exercised
/// instead of every case stopping at the version byte.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let header = prop_oneof![
        3 => (Just(PROTOCOL_VERSION), 0u8..12).prop_map(|(v, k)| vec![v, k]),
        1 => prop::collection::vec(any::<u8>(), 0..3),
    ];
    (header, prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(mut h, body)| {
        h.extend(body);
        h
    })
}

proptest! {
    // The issue asks CI to push at least 100,000 arbitrary inputs through
    // every decoder.
    #![proptest_config(ProptestConfig { cases: 100_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in hostile_bytes()) {
        decode_everything(&bytes);
    }
}

/// A valid frame with a few bytes changed, cut short or extended: the
/// inputs most likely to reach deep into a decoder.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: prop::sample::Index, to: u8 },
    Truncate { at: prop::sample::Index },
    Insert { at: prop::sample::Index, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, to)| Mutation::Flip { at, to }),
        any::<prop::sample::Index>().prop_map(|at| Mutation::Truncate { at }),
        (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        match m {
            Mutation::Flip { at, to } => {
                let i = at.index(bytes.len());
                bytes[i] = *to;
            }
            Mutation::Truncate { at } => bytes.truncate(at.index(bytes.len())),
            Mutation::Insert { at, bytes: extra } => {
                let i = at.index(bytes.len());
                bytes.splice(i..i, extra.iter().copied());
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_node_frames_never_panic(message in node_message(), mutations in prop::collection::vec(mutation(), 1..4)) {
        decode_everything(&mutate(encode_node(&message, 9, MacTag::default()), &mutations));
    }

    #[test]
    fn mutated_pod_documents_never_panic(document in pod_document(), mutations in prop::collection::vec(mutation(), 1..4)) {
        let bytes = encode_signed_to_vec(&document, |_| Signature::default()).unwrap();
        decode_everything(&mutate(bytes, &mutations));
    }

    #[test]
    fn mutated_config_blobs_never_panic(blob in config_blob(), mutations in prop::collection::vec(mutation(), 1..4)) {
        let bytes = encode_signed_to_vec(&blob, |_| Signature::default()).unwrap();
        decode_everything(&mutate(bytes, &mutations));
    }

    #[test]
    fn mutated_desired_frames_never_panic(document in desired(), mutations in prop::collection::vec(mutation(), 1..4)) {
        let bytes = encode_signed_to_vec(&document.as_state(), |_| Signature::default()).unwrap();
        decode_everything(&mutate(bytes, &mutations));
    }
}
