//! Devices on their own network: a bridge on the host with an address (the
//! controller listens there) and one network namespace per device, joined
//! to the bridge by a veth pair, as `scripts/demo` sets them up. A device's
//! link can be cut without closing its connections: a silent partition.
//! Used by the end-to-end tests and the fleet benchmarks; needs root.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, ensure};

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip").args(args).output().context("running ip (iproute2, installed by scripts/setup)")?;
    ensure!(output.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    Ok(())
}

/// Networks made by this process so far: tests in one process run in
/// parallel, each with its own network.
static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// The bridge and the device namespaces; all removed when dropped.
pub struct Network {
    /// Short and unique per network on this machine: interface names are
    /// limited to 15 bytes.
    tag: String,
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
        let tag =
            format!("{:x}", (std::process::id() & 0xffff) << 4 | (NETWORKS.fetch_add(1, Ordering::Relaxed) & 0xf));
        let in_use = Command::new("ip").args(["-4", "-o", "addr"]).output().context("running ip addr")?;
        let in_use = String::from_utf8_lossy(&in_use.stdout).into_owned();
        // A free /24 in 10.78.20.0-10.78.219.0, starting from one derived
        // from the tag.
        let start = u32::from_str_radix(&tag, 16).unwrap_or(0) % 200;
        let subnet = (0..200)
            .map(|i| [10, 78, ((start + i) % 200 + 20) as u8])
            .find(|s| !in_use.contains(&format!("inet {}.{}.{}.", s[0], s[1], s[2])))
            .context("no free 10.78.x.0/24 subnet on this machine")?;
        let bridge = format!("fbr{tag}");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        // From here on, Drop removes what exists.
        let mut network = Network { tag, bridge, subnet, namespaces: Vec::new() };
        let host = network.host_ip().to_string();
        ip(&["addr", "add", &format!("{host}/24"), "dev", &network.bridge])?;
        ip(&["link", "set", &network.bridge, "up"])?;
        for i in 0..devices {
            let namespace = format!("flotilla-net-{}-{i}", network.tag);
            let veth = network.veth_name(i);
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

    /// The host end of device `device`'s veth pair.
    fn veth_name(&self, device: usize) -> String {
        format!("fbv{}-{device}", self.tag)
    }

    /// The host's address on the bridge: where devices reach the controller.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], 1)
    }

    /// Device `device`'s address.
    pub fn device_ip(&self, device: usize) -> Ipv4Addr {
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

impl Network {
    /// Limits what the host sends to device `device` to `kbit_per_s` (a
    /// token bucket on the host end of its veth): a slow link, so that an
    /// image pull takes seconds and can be cut in the middle.
    pub fn limit_rate(&self, device: usize, kbit_per_s: u32) -> anyhow::Result<()> {
        let veth = self.veth_name(device);
        let rate = format!("{kbit_per_s}kbit");
        let output = Command::new("tc")
            .args([
                "qdisc", "replace", "dev", &veth, "root", "tbf", "rate", &rate, "burst", "32kbit", "latency", "400ms",
            ])
            .output()
            .context("running tc (iproute2, installed by scripts/setup)")?;
        ensure!(output.status.success(), "tc on {veth}: {}", String::from_utf8_lossy(&output.stderr).trim());
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for (i, namespace) in self.namespaces.iter().enumerate() {
            // The veth pair goes first: a namespace outlives `ip netns del`
            // while anything still holds it, such as a killed agent's TCP
            // socket retransmitting over a link that was down.
            let _ = ip(&["link", "del", &self.veth_name(i)]);
            if let Err(e) = ip(&["netns", "del", namespace]) {
                eprintln!("cleanup: {e:#}");
            }
        }
        if let Err(e) = ip(&["link", "del", &self.bridge]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}
