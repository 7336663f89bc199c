//! Devices on their own network: a bridge on the host with an address (the
//! controller listens there) and one network namespace per device, joined
//! to the bridge by a veth pair, as `scripts/demo` sets them up. A device's
//! link can be cut without closing its connections: a silent partition.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, ensure};

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip").args(args).output().context("running ip (iproute2, installed by scripts/setup)")?;
    ensure!(output.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    Ok(())
}

/// The host end of device `device`'s veth pair.
fn veth_name(device: usize) -> String {
    format!("fbv{}-{device}", std::process::id())
}

/// The bridge and the device namespaces; all removed when dropped.
pub struct Network {
    bridge: String,
    subnet: [u8; 3],
    namespaces: Vec<String>,
}

impl Network {
    /// Creates the bridge (`<subnet>.1/24`) and `devices` namespaces
    /// (`<subnet>.<10 + i>`, interface `eth0`). Names and the subnet are
    /// derived from this process's id, so that two benchmarks (or the demo,
    /// which uses `flot0` and 10.77.0.0/24) do not collide.
    pub fn create(devices: usize) -> anyhow::Result<Self> {
        ensure!(devices <= 200, "at most 200 devices per network");
        let pid = std::process::id();
        let subnet = [10, 78, (pid % 200 + 20) as u8];
        let in_use = Command::new("ip").args(["-4", "-o", "addr"]).output().context("running ip addr")?;
        let prefix = format!("inet {}.{}.{}.", subnet[0], subnet[1], subnet[2]);
        ensure!(
            !String::from_utf8_lossy(&in_use.stdout).contains(&prefix),
            "the subnet {}.{}.{}.0/24 is already in use on this machine",
            subnet[0],
            subnet[1],
            subnet[2]
        );
        let bridge = format!("fbr{pid}");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        // From here on, Drop removes what exists.
        let mut network = Network { bridge, subnet, namespaces: Vec::new() };
        let host = network.host_ip().to_string();
        ip(&["addr", "add", &format!("{host}/24"), "dev", &network.bridge])?;
        ip(&["link", "set", &network.bridge, "up"])?;
        for i in 0..devices {
            let namespace = format!("flotilla-bench-{pid}-{i}");
            let veth = veth_name(i);
            ip(&["netns", "add", &namespace])?;
            network.namespaces.push(namespace.clone());
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace])?;
            ip(&["link", "set", &veth, "master", &network.bridge, "up"])?;
            let address = format!("{}/24", network.device_ip(i));
            ip(&["-n", &namespace, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    /// The host's address on the bridge: where devices reach the controller.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], 1)
    }

    fn device_ip(&self, device: usize) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], 10 + device as u8)
    }

    /// The namespace of device `device`.
    pub fn namespace(&self, device: usize) -> anyhow::Result<&str> {
        self.namespaces.get(device).map(String::as_str).with_context(|| format!("no device {device}"))
    }

    /// Takes the device's `eth0` down (or up). Down, packets are dropped in
    /// both directions but no connection is closed: the controller's side
    /// hears nothing, as with a cut cable further along.
    pub fn set_link(&self, device: usize, up: bool) -> anyhow::Result<()> {
        ip(&["-n", self.namespace(device)?, "link", "set", "eth0", if up { "up" } else { "down" }])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for (i, namespace) in self.namespaces.iter().enumerate() {
            // The veth pair goes first: a namespace outlives `ip netns del`
            // while anything still holds it, such as a killed agent's TCP
            // socket retransmitting over a link that was down.
            let _ = ip(&["link", "del", &veth_name(i)]);
            if let Err(e) = ip(&["netns", "del", namespace]) {
                eprintln!("cleanup: {e:#}");
            }
        }
        if let Err(e) = ip(&["link", "del", &self.bridge]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}
