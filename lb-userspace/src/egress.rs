//! Which devices the data path may redirect to. A native-mode XDP redirect to a device
//! whose driver cannot transmit XDP frames (a bridge, a veth whose peer has neither XDP
//! nor GRO) is lost, so only devices that can are put in the `EGRESS` devmap; a FIB answer
//! outside it is rewritten and passed to the kernel, which forwards it (`pass_egress`).
//! [`Egress::sync`] runs at start and every second, so devices that appear or change later
//! are picked up, and says in the log which path each device gets.

use std::collections::{BTreeMap, HashMap};

use tracing::{info, warn};

use crate::bpf::AttachMode;
use crate::dataplane::{Dataplane, DataplaneError};
use crate::netdev::{Device, XDP_ACT_NDO_XMIT};

/// How packets leave through a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// Redirected by XDP, never an skb on this host.
    Xdp,
    /// Passed to the kernel, which forwards it; the reason, for the operator.
    Kernel(&'static str),
}

impl Path {
    pub fn name(&self) -> &'static str {
        match self {
            Path::Xdp => "xdp",
            Path::Kernel(_) => "kernel",
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Path::Xdp => "",
            Path::Kernel(why) => why,
        }
    }
}

/// The path a device gets. `attached`: xlbd's program is attached to it.
pub fn path_for(mode: AttachMode, dev: &Device, attached: bool) -> Path {
    if dev.loopback {
        return Path::Kernel("loopback");
    }
    if !dev.up {
        return Path::Kernel("down");
    }
    match (mode, dev.xdp_features) {
        // Generic XDP hands the redirected frame to the device as an skb: any device.
        (AttachMode::Skb, _) => Path::Xdp,
        (AttachMode::Native, Some(f)) if f & XDP_ACT_NDO_XMIT != 0 => Path::Xdp,
        (AttachMode::Native, Some(_)) => Path::Kernel(
            "the driver cannot transmit XDP frames (a bridge; a veth whose peer has neither XDP nor GRO)",
        ),
        // A kernel without the netdev netlink family (before 6.3) does not say: trust the
        // devices xlbd drives natively, route the rest through the kernel.
        (AttachMode::Native, None) if attached => Path::Xdp,
        (AttachMode::Native, None) => {
            Path::Kernel("XDP transmit support unknown (kernel before 6.3) and xlb is not attached")
        }
    }
}

/// One device as `xlb status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressInfo {
    pub ifindex: u32,
    pub name: String,
    pub attached: bool,
    pub path: Path,
    /// Packets the data path passed to the kernel because the FIB chose this device.
    pub kernel_packets: u64,
}

/// The devices known at the last sync, and the devmap kept in step with them.
#[derive(Debug)]
pub struct Egress {
    mode: AttachMode,
    attached: Vec<String>,
    known: BTreeMap<u32, EgressInfo>,
}

impl Egress {
    pub fn new(mode: AttachMode, attached: Vec<String>) -> Self {
        Egress {
            mode,
            attached,
            known: BTreeMap::new(),
        }
    }

    /// The devices, by ifindex.
    pub fn devices(&self) -> Vec<EgressInfo> {
        self.known.values().cloned().collect()
    }

    /// Brings the devmap in step with `devices` (what the namespace has now), logs every
    /// device that is new or whose path changed, and every FIB egress that packets were
    /// first passed to the kernel for.
    pub fn sync<D: Dataplane>(
        &mut self,
        dp: &mut D,
        devices: &[Device],
    ) -> Result<(), DataplaneError> {
        let misses: HashMap<u32, u64> = dp.egress_misses()?.into_iter().collect();
        let mut next = BTreeMap::new();
        for dev in devices {
            let attached = self.attached.contains(&dev.name);
            let path = path_for(self.mode, dev, attached);
            let old = self.known.get(&dev.ifindex);
            if old.map(|o| (&o.name, &o.path)) != Some((&dev.name, &path)) {
                match &path {
                    Path::Xdp => dp.allow_egress(dev.ifindex)?,
                    Path::Kernel(_) => dp.deny_egress(dev.ifindex)?,
                }
                log_path(dev, attached, &path);
            }
            let kernel_packets = misses.get(&dev.ifindex).copied().unwrap_or(0);
            if kernel_packets > 0 && old.is_none_or(|o| o.kernel_packets == 0) {
                warn!(
                    "xlbd: FIB egress {} (ifindex {}) is in use and cannot take XDP redirects: \
                     packets to it are forwarded by the kernel (counted pass_egress)",
                    dev.name, dev.ifindex
                );
            }
            next.insert(
                dev.ifindex,
                EgressInfo {
                    ifindex: dev.ifindex,
                    name: dev.name.clone(),
                    attached,
                    path,
                    kernel_packets,
                },
            );
        }
        for gone in self.known.keys().filter(|i| !next.contains_key(i)) {
            // The kernel drops a device's devmap entry when it unregisters; this is for a
            // device renamed away or moved to another namespace.
            dp.deny_egress(*gone)?;
        }
        self.known = next;
        Ok(())
    }
}

fn log_path(dev: &Device, attached: bool, path: &Path) {
    let xdp = if attached {
        "xlb attached"
    } else {
        "not attached"
    };
    match path {
        Path::Xdp => info!(
            "xlbd: egress {} (ifindex {}, {xdp}): XDP redirect",
            dev.name, dev.ifindex
        ),
        Path::Kernel(why) => info!(
            "xlbd: egress {} (ifindex {}, {xdp}): kernel path: {why}",
            dev.name, dev.ifindex
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::FakeDataplane;

    fn dev(ifindex: u32, name: &str, features: Option<u64>) -> Device {
        Device {
            ifindex,
            name: name.into(),
            up: true,
            loopback: false,
            xdp_features: features,
        }
    }

    #[test]
    fn paths_by_mode_and_driver() {
        use AttachMode::{Native, Skb};
        let veth = dev(5, "veth0", Some(0x7f));
        let bridge = dev(6, "br0", Some(0));
        let old_kernel = dev(7, "eth0", None);
        let down = Device {
            up: false,
            ..veth.clone()
        };
        let lo = Device {
            loopback: true,
            ..dev(1, "lo", Some(0))
        };
        let cases = [
            (Native, &veth, false, "xdp"),
            (Native, &bridge, false, "kernel"),
            (Native, &bridge, true, "kernel"),
            (Skb, &bridge, false, "xdp"),
            (Native, &old_kernel, true, "xdp"),
            (Native, &old_kernel, false, "kernel"),
            (Native, &down, true, "kernel"),
            (Skb, &down, true, "kernel"),
            (Skb, &lo, false, "kernel"),
        ];
        for (mode, d, attached, want) in cases {
            assert_eq!(
                path_for(mode, d, attached).name(),
                want,
                "{mode:?} {} attached={attached}",
                d.name
            );
        }
        assert!(path_for(Native, &bridge, false).reason().contains("bridge"));
    }

    #[test]
    fn sync_fills_the_devmap_and_follows_changes() {
        let mut dp = FakeDataplane::new(16);
        let mut eg = Egress::new(AttachMode::Native, vec!["veth0".into()]);
        let veth = dev(5, "veth0", Some(XDP_ACT_NDO_XMIT));
        let bridge = dev(6, "br0", Some(0));
        eg.sync(&mut dp, &[veth.clone(), bridge.clone()]).unwrap();
        assert_eq!(dp.egress().unwrap(), vec![5]);
        let infos = eg.devices();
        assert_eq!(infos.len(), 2);
        assert!(infos[0].attached && infos[0].path == Path::Xdp);
        assert!(!infos[1].attached && infos[1].path.name() == "kernel");

        // The data path passed packets to the bridge: reported.
        dp.egress_miss.insert(6, 42);
        // A device appears (hot-plug) and the veth loses its XDP transmit support.
        let new = dev(9, "veth9", Some(XDP_ACT_NDO_XMIT));
        let veth_no_xmit = dev(5, "veth0", Some(0));
        eg.sync(&mut dp, &[veth_no_xmit, bridge.clone(), new])
            .unwrap();
        assert_eq!(dp.egress().unwrap(), vec![9]);
        let br = eg.devices().into_iter().find(|d| d.ifindex == 6).unwrap();
        assert_eq!(br.kernel_packets, 42);

        // A device that is gone leaves the map.
        eg.sync(&mut dp, &[bridge]).unwrap();
        assert!(dp.egress().unwrap().is_empty());
        assert_eq!(eg.devices().len(), 1);
    }
}
